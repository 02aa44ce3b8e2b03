"""Writing files so that nothing corrupt is ever left under a final name.

Every writer of the toolkit goes through `atomic_path`: the content goes to `NAME.part` beside the
target, is checked (`verify`), gets ordinary permissions and is renamed over the target in one
step. A failure of any kind removes the temporary; running out of space becomes a `DiskFullError`
that names the disk, what is free and what was needed. Requests are sized against the free space
before work starts (`check_free_space`). Like `errors`, this module imports nothing of the project
but `errors`, so every package may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from wavegan.errors import DiskFullError, UserError, one_line

PART_SUFFIX = ".part"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _current_umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give a new file: 0644 under umask 022


def existing_parent(path: str) -> str:
  """The nearest folder at or above `path` that exists (where its free space is measured)."""
  p = os.path.abspath(path or ".")
  while not os.path.isdir(p):
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  return p


def mount_point(path: str) -> str:
  """The mount point of the file system holding `path` (the "disk" named in messages)."""
  p = existing_parent(path)
  while not os.path.ismount(p):
    p = os.path.dirname(p)
  return p


def free_bytes(path: str) -> int:
  """Bytes free for this user on the file system that holds (or would hold) `path`."""
  return shutil.disk_usage(existing_parent(path)).free


def human_bytes(n: float) -> str:
  """1234567 -> '1.2 MB' (decimal units, as disks are sold)."""
  for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
    if abs(n) < 1000 or unit == "PB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1000.0
  return f"{n:.1f} PB"


def disk_full(path: str, need: int | None = None) -> DiskFullError:
  """The error for a write to `path` that ran out of space."""
  free = free_bytes(path)
  needs = f"; needs about {human_bytes(need)} more" if need else ""
  return DiskFullError(
    errno.ENOSPC,
    one_line(
      f"no space left on {mount_point(path)} ({human_bytes(free)} free) writing {path}{needs}; "
      "free some space and run the same command again"
    ),
  )


def check_free_space(path: str, need: int, what: str, margin: float = 1.05) -> None:
  """Refuses, before any work, a request whose output would not fit on `path`'s disk.

  Raises:
    DiskFullError: with the estimate and the free space.
  """
  free = free_bytes(path)
  if need * margin > free:
    raise DiskFullError(
      errno.ENOSPC,
      one_line(
        f"{what} needs about {human_bytes(need)} on {mount_point(path)}, which has "
        f"{human_bytes(free)} free; free some space, ask for less or choose another output folder"
      ),
    )


def is_no_space(err: BaseException) -> bool:
  return isinstance(err, OSError) and err.errno in _NO_SPACE


def remove_quietly(path: str) -> None:
  with contextlib.suppress(OSError):
    os.remove(path)


@contextlib.contextmanager
def atomic_path(
  path: str, verify: Callable[[str], None] | None = None, mode: int | None = None
) -> Iterator[str]:
  """Yields a temporary path beside `path`; when the block succeeds, `verify(tmp)` runs, the
  file gets `mode` (default: ordinary permissions under the umask) and is renamed to `path`.

  On any failure the temporary is removed and `path` is untouched; a full disk raises
  `DiskFullError`.
  """
  folder = os.path.dirname(path) or "."
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as err:
    if is_no_space(err):
      raise disk_full(path) from None
    raise
  tmp = path + PART_SUFFIX
  try:
    yield tmp
    if verify is not None:
      verify(tmp)
    os.chmod(tmp, FILE_MODE if mode is None else mode)
    os.replace(tmp, path)
  except BaseException as err:
    remove_quietly(tmp)
    if is_no_space(err):
      raise disk_full(path) from None
    raise


def _check_size(expected: int) -> Callable[[str], None]:
  def verify(tmp: str) -> None:
    size = os.path.getsize(tmp)
    if size != expected:
      # A short write that raised nothing: treat it as what it almost always is.
      raise (
        disk_full(tmp, expected - size)
        if size < expected
        else UserError(f"{tmp}: wrote {size} bytes, expected {expected}")
      )

  return verify


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically, checking the size on disk."""
  with atomic_path(path, _check_size(len(data))) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 `text` to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, indent: int | None = 1) -> None:
  """Writes `obj` as JSON to `path` atomically (NaN and infinity are refused, not written)."""
  write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def append_line(path: str, line: str) -> None:
  """Appends one line to a log file whole or not at all: on failure the file is cut back to
  where it was, so a reader never meets half a line."""
  data = (line.rstrip("\n") + "\n").encode("utf-8")
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
  try:
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
      view = memoryview(data)
      while view:
        view = view[os.write(fd, view) :]
    except BaseException as err:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, start)
      if is_no_space(err):
        raise disk_full(path, len(data)) from None
      raise
  finally:
    os.close(fd)
