"""A prepared cache: a folder of audio decoded once into fixed-length windows on disk.

  CACHE/cache.json            format version, slicing options, label vocabulary, one entry per
                              source file (path relative to the data folder, size, mtime, labels,
                              attributes, where its windows are, or why it was skipped) and per
                              sub-folder that could not be listed ("sub/")
  CACHE/shards/NNNNN.npy      windows int16 (or float32) [rows, T, C], memory-mapped when read
  CACHE/prepare_report.json   what the last `prepare` did with every file, and a summary line

`prepare` decodes in parallel worker processes and writes new shards; `cache.json` is replaced
atomically last, so a killed `prepare` leaves the previous cache intact. Every file is written
under a temporary name, checked and renamed (`wavegan.files.atomic_path`), so none is ever
corrupt under its final name; a full disk stops `prepare` with a `DiskFullError`, takes back the
shards it wrote, and the same call after freeing space builds exactly the cache a clean run
would (it also clears what a killed run left). Re-running it on a grown
folder decodes only new or changed files (by size and modification time): everything else is
kept where it is. The clips of a cache are always ordered by source path, so a cache built in
several passes reads exactly like one built at once.

Only numpy (and worker processes) here: no jax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from typing import Any

import numpy as np

from data_pipelines.audio_io import (
  AUDIO_EXTENSIONS,
  AudioDecodeError,
  AudioFile,
  DataError,
  scan_folder,
)
from data_pipelines.manifest import Manifest, read_manifest
from data_pipelines.preprocess import SliceOptions, process_file
from data_pipelines.progress import progress_bar
from data_pipelines.reports import reason_kind, summarize
from wavegan.errors import DiskFullError, describe_os_error, one_line
from wavegan.files import (
  PART_SUFFIX,
  atomic_path,
  disk_full,
  free_bytes,
  is_no_space,
  remove_quietly,
  write_text,
)

CACHE_VERSION = 1
CACHE_FILE = "cache.json"
REPORT_FILE = "prepare_report.json"
SHARD_DIR = "shards"
FOLDER_FIELD = "folder"  # the label field every cache has: the file's first-level sub-folder
STORE_DTYPES = ("int16", "float32")
SHARD_BYTES = 256 << 20  # a new shard file every ~256 MB of windows
INT16_SCALE = 32767.0
MIN_POOL_JOBS = 32  # fewer files decode faster in-process than worker processes start


@dataclasses.dataclass(frozen=True)
class FileEntry:
  """One source file as the cache knows it.

  Attributes:
    path: path relative to the data folder ("/"-separated).
    size: bytes when prepared.
    mtime_ns: modification time when prepared.
    labels: label field -> value (always has "folder").
    attributes: continuous attributes from the manifest.
    seconds: decoded duration (0 when skipped).
    shard: index into the cache's shard list (-1 when skipped).
    row: first row of its windows in that shard.
    offsets: start sample of each window in the file.
    skipped: why the file is not used ("" when it is).
  """

  path: str
  size: int
  mtime_ns: int
  labels: dict[str, str]
  attributes: dict[str, float] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0
  shard: int = -1
  row: int = 0
  offsets: tuple[int, ...] = ()
  skipped: str = ""

  @property
  def count(self) -> int:
    return len(self.offsets)


@dataclasses.dataclass(frozen=True)
class PrepareReport:
  """What one `prepare` call did.

  Attributes:
    cache: the cache folder.
    files_used: files whose windows are in the cache.
    clips: windows in the cache.
    decoded: files decoded by this call (the rest were unchanged since the last one).
    seconds_decoded: seconds of source audio decoded by this call.
    wall_seconds: how long the call took.
    skipped: (path, reason) for every file not used.
  """

  cache: str
  files_used: int
  clips: int
  decoded: int
  seconds_decoded: float
  wall_seconds: float
  skipped: tuple[tuple[str, str], ...]

  def summary(self) -> str:
    """'2031 files used (2031 clips), 5 skipped: 3 unreadable, 2 too short'."""
    return summarize(self.files_used, self.clips, self.skipped)


def is_cache(path: str) -> bool:
  """Whether `path` is a prepared cache folder."""
  return os.path.isfile(os.path.join(path, CACHE_FILE))


def _options_dict(opts: SliceOptions, dtype: str) -> dict[str, Any]:
  return {**dataclasses.asdict(opts), "dtype": dtype}


def _stat(path: str) -> tuple[int, int] | None:
  """(size, mtime_ns), or None for a file that vanished since the scan."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_size, st.st_mtime_ns


def _quantize(windows: np.ndarray, dtype: str) -> np.ndarray:
  """float32 windows in [-1, 1] to the store dtype (int16 PCM halves the cache)."""
  if dtype == "float32":
    return windows.astype(np.float32)
  return np.round(np.clip(windows, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def _work(
  job: tuple[str, SliceOptions, str],
) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
  """Worker: decodes one file. Returns (reason or "", windows, starts, seconds)."""
  path, opts, dtype = job
  try:
    windows, starts, length = process_file(path, opts)  # [W, T, C], [W]
  except AudioDecodeError as err:
    return err.reason, None, None, 0.0
  except Exception as err:  # pylint: disable=broad-except  (one odd file never stops a prepare)
    return one_line(f"cannot decode ({type(err).__name__}: {err})".splitlines()[0]), None, None, 0.0
  return "", _quantize(windows, dtype), starts, length / opts.sample_rate


@contextlib.contextmanager
def _workers_deaf_to_ctrl_c() -> Iterator[None]:
  """Processes started in this block inherit SIGINT blocked, so the parent alone stops the work
  and shuts them down: no worker prints a traceback of its own, nor dies half-way through
  reading its start-up data. A Ctrl-C that comes meanwhile is held back, not lost: it is raised
  as KeyboardInterrupt when the block ends."""
  if threading.current_thread() is not threading.main_thread():
    yield  # signals are the main thread's to handle
    return
  held: list[int] = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one is handled now
    signal.signal(signal.SIGINT, previous)
  if held and previous is not signal.SIG_IGN:
    raise KeyboardInterrupt


def _run_jobs(
  jobs: list[tuple[str, SliceOptions, str]], workers: int
) -> Iterable[tuple[str, np.ndarray | None, np.ndarray | None, float]]:
  """Results of `_work` for each job, in job order; in worker processes when `workers` > 1.

  If the pool breaks (a worker killed, or a calling script without an `if __name__ ==
  "__main__":` guard, which "spawn" workers re-run), the remaining files are decoded here.
  """
  if workers <= 1 or len(jobs) < MIN_POOL_JOBS:
    yield from map(_work, jobs)
    return
  # "spawn": the caller may be a process with JAX's threads running, which fork would copy.
  ctx = multiprocessing.get_context("spawn")
  done = 0
  try:
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
      with _workers_deaf_to_ctrl_c():
        results = pool.map(_work, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers))))
      for result in results:
        done += 1
        yield result
  except BrokenProcessPool:
    warnings.warn(
      "decoder worker processes failed (killed, or the calling script lacks an "
      "`if __name__ == '__main__':` guard); decoding the remaining "
      f"{len(jobs) - done} files in this process",
      RuntimeWarning,
      stacklevel=2,
    )
    yield from map(_work, jobs[done:])


class _ShardWriter:
  """Appends windows to new shard files of about SHARD_BYTES each, each written atomically.

  Attributes:
    names: shard files written so far (file names in `folder`).
    bytes_added: bytes of every window queued so far, written or not.
  """

  def __init__(self, folder: str, first_index: int):
    self.folder = folder
    self.next_index = first_index
    self.names: list[str] = []
    self.bytes_added = 0
    self._pending: list[np.ndarray] = []
    self._rows = 0
    self._bytes = 0

  def add(self, windows: np.ndarray) -> tuple[int, int]:
    """Queues windows [W, T, C]; returns (shard index, first row) they will have."""
    where = (self.next_index, self._rows)
    self._pending.append(windows)
    self._rows += windows.shape[0]
    self._bytes += windows.nbytes
    self.bytes_added += windows.nbytes
    if self._bytes >= SHARD_BYTES:
      self.flush()
    return where

  def flush(self) -> None:
    if not self._pending:
      return
    name = f"{self.next_index:05d}.npy"
    save_shard(os.path.join(self.folder, name), np.concatenate(self._pending))
    self.names.append(name)
    self.next_index += 1
    self._pending, self._rows, self._bytes = [], 0, 0

  @property
  def pending_bytes(self) -> int:
    """Bytes queued for the next shard, not written yet."""
    return self._bytes

  def discard(self) -> None:
    """Removes every shard this writer wrote (a failed prepare leaves no orphans taking space)."""
    for name in self.names:
      remove_quietly(os.path.join(self.folder, name))
    self.names, self._pending, self._rows, self._bytes = [], [], 0, 0


def save_shard(path: str, windows: np.ndarray) -> None:
  """Writes windows as a .npy file under a temporary name, checks it, renames it into place.

  The check reads the header back and compares the file's size with what the header promises,
  which catches a short write that raised nothing.

  Raises:
    DiskFullError: the disk filled up (nothing is left under either name).
  """

  def verify(tmp: str) -> None:
    size = os.path.getsize(tmp)
    try:
      with open(tmp, "rb") as f:
        shape, dtype, offset = _npy_header(f)
    except ValueError:
      shape, dtype, offset = None, None, 0
    expected = offset + windows.nbytes
    if size < expected:  # a short write that raised nothing: what it almost always is
      raise disk_full(path, expected - size)
    if shape != windows.shape or dtype != windows.dtype or size != expected:
      raise DataError(f"{path}: the shard read back is not what was written")

  with atomic_path(path, verify) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, windows)


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
  """(shape, dtype, data offset) of an open .npy file.

  Raises:
    ValueError: not a readable .npy header (e.g. cut short).
  """
  version = np.lib.format.read_magic(f)
  readers = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
  }
  if version not in readers:
    raise ValueError(f"npy version {version}")
  shape, _, dtype = readers[version](f)
  return tuple(shape), dtype, f.tell()


def _entry_labels(
  folder_label: str, table: Manifest | None, abs_path: str
) -> tuple[dict[str, str], dict[str, float], str]:
  """(labels, attributes, skip reason or "") of one file."""
  labels = {FOLDER_FIELD: folder_label}
  if table is None:
    return labels, {}, ""
  key = os.path.normpath(abs_path)
  if key not in table.labels:
    return labels, {}, "not in the manifest"
  return {**labels, **table.labels[key]}, dict(table.attributes[key]), ""


def _read_info(cache: str) -> dict[str, Any]:
  path = os.path.join(cache, CACHE_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except OSError as err:
    raise DataError(f"{path}: cannot read the cache index ({describe_os_error(err)})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise DataError(
      f"{path}: cannot read the cache index ({err}); prepare it again with --force"
    ) from None
  if not isinstance(info, dict) or info.get("version") != CACHE_VERSION:
    version = info.get("version") if isinstance(info, dict) else None
    raise DataError(
      f"{path}: cache format version {version} (this version reads "
      f"{CACHE_VERSION}); prepare it again with --force"
    )
  return info


def _write_json(path: str, obj: Any) -> None:
  """Writes `obj` to `path` atomically; a full disk names the bytes the file needed."""
  text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
  try:
    write_text(path, text)
  except DiskFullError:
    raise disk_full(path, len(text.encode("utf-8"))) from None


def _check_out(out: str) -> str:
  """Creates the cache folder `out` (and its shard folder); returns the shard folder.

  Raises:
    DataError: `out` is a file, or cannot be created.
    DiskFullError: no space for a folder.
  """
  if os.path.exists(out) and not os.path.isdir(out):
    raise DataError(f"{out}: is a file, not a folder; the prepared cache needs a folder of its own")
  shard_dir = os.path.join(out, SHARD_DIR)
  try:
    os.makedirs(shard_dir, exist_ok=True)
  except OSError as err:
    if is_no_space(err):
      raise disk_full(out) from None
    raise DataError(f"cannot make the cache folder: {describe_os_error(err)}") from None
  return shard_dir


def _indexed_shards(out: str) -> list[str]:
  """The shard files the cache index at `out` names ([] when there is no readable index)."""
  try:
    return [str(n) for n in _read_info(out)["shards"]]
  except (DataError, KeyError, TypeError):
    return []


def _tidy(out: str, shard_dir: str, keep: list[str]) -> None:
  """Removes what a killed or failed run left: shards no index names, and `.part` temporaries.

  Only files nothing refers to go, so the current index stays valid; and a rerun numbers its
  shards exactly as a clean run would.
  """
  for name in set(os.listdir(shard_dir)) - set(keep):
    remove_quietly(os.path.join(shard_dir, name))
  for name in (CACHE_FILE, REPORT_FILE):
    remove_quietly(os.path.join(out, name + PART_SUFFIX))


def _previous(out: str, wanted: dict[str, Any], force: bool) -> dict[str, FileEntry]:
  """Entries of the cache already at `out` (shard = shard file number), or {} to start afresh.

  Raises:
    DataError: the cache there was made with other options and not `force`.
  """
  if not is_cache(out) or force:
    return {}
  info = _read_info(out)
  if info["options"] != wanted:
    had = info["options"]
    diff = ", ".join(f"{k}={had.get(k)!r}" for k in wanted if had.get(k) != wanted[k])
    raise DataError(
      f"{out} was prepared with other options ({diff}); use another --out, or --force to rebuild it"
    )
  shards = list(info["shards"])
  # Entries name shards by position in the index; here they name the shard file's number.
  return {e["path"]: _entry_from_json(e, shards) for e in info["files"]}


def _no_room(shard_dir: str, added: int, failed: int, done: int, total: int) -> DiskFullError:
  """The full-disk error of a prepare, with about how much more space it needs.

  Args:
    shard_dir: where the shards go.
    added: bytes of windows from the `done` files decoded so far (none of them kept).
    failed: bytes of the shard whose write failed.
    done: files decoded so far.
    total: files to decode.
  """
  estimate = added * max(total, 1) // max(done, 1)  # all the shards, extrapolated
  return disk_full(shard_dir, max(estimate - free_bytes(shard_dir), failed, 1))


def prepare(
  data_dir: str,
  out: str,
  opts: SliceOptions,
  *,
  dtype: str = "int16",
  manifest: str | None = None,
  workers: int | None = None,
  force: bool = False,
  progress: bool = False,
  log: Callable[[str], None] | None = None,
) -> PrepareReport:
  """Decodes the audio under `data_dir` into the cache `out`, or brings an existing cache up to date.

  Every file goes to its final name complete or not at all (written under a temporary name,
  checked, renamed); `cache.json` is replaced last, so a failed or killed prepare leaves the
  previous cache intact, and the next run removes what it left and numbers its shards as a clean
  run would. Files that cannot be used (truncated, unreadable, silent, ...) and sub-folders that
  cannot be listed are skipped and named, with the reason, in `prepare_report.json`.

  Args:
    data_dir: folder of audio files (labels from first-level sub-folders).
    out: cache folder (created if needed).
    opts: slicing options; an existing cache must have been made with the same ones.
    dtype: how windows are stored: "int16" (16-bit PCM, half the size) or "float32".
    manifest: CSV/JSON file with label fields and attributes per file; files it does not list
      are skipped. Read again on every call, so editing it relabels without decoding.
    workers: decoder processes (default: one per CPU core).
    force: rebuild from scratch even when a cache with other options is there.
    progress: show a progress bar.
    log: where to print a line per skipped file (default: nowhere); odd characters in file names
      are escaped, so each is one line.

  Returns:
    What was done; also written to `out/prepare_report.json`.

  Raises:
    DataError: `data_dir` is missing, a file or has no audio files, `out` is a file, the cache at
      `out` was made with other options (and not `force`), or no file could be used.
    DiskFullError: the disk filled up; the message names it and about how much more is needed.
      Nothing half-written is left, and the same call after freeing space completes the cache.
  """
  t0 = time.perf_counter()
  opts.validate()
  if dtype not in STORE_DTYPES:
    raise DataError(f"dtype {dtype!r}: must be one of {STORE_DTYPES}")
  data_dir = os.path.abspath(data_dir)
  unlisted: list[tuple[str, str]] = []
  files = scan_folder(data_dir, unlisted)
  if not files:
    raise DataError(
      f"{data_dir}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})"
      + (f"; {unlisted[0][0]}: {unlisted[0][1]}" if unlisted else "")
    )
  table = read_manifest(manifest, data_dir) if manifest else None
  wanted = _options_dict(opts, dtype)
  shard_dir = _check_out(out)
  old = _previous(out, wanted, force)
  keep = _indexed_shards(out)
  _tidy(out, shard_dir, keep)

  entries, pending, jobs = _plan(data_dir, files, unlisted, table, old, opts, dtype)
  # New shards never reuse a number of a file an index names: the old index stays valid until
  # the new one replaces it.
  writer = _ShardWriter(shard_dir, first_index=_next_shard_index(keep))
  try:
    seconds_decoded = _decode_into(writer, pending, jobs, entries, workers, progress)
    report = _finish(
      out, data_dir, wanted, table, entries, len(files), len(jobs), seconds_decoded, t0, log
    )
  except BaseException:
    writer.discard()  # no index names them: they would only take space
    raise
  for name in set(os.listdir(shard_dir)) - set(_indexed_shards(out)):  # superseded now
    remove_quietly(os.path.join(shard_dir, name))
  return report


def _plan(
  data_dir: str,
  files: list[AudioFile],
  unlisted: list[tuple[str, str]],
  table: Manifest | None,
  old: dict[str, FileEntry],
  opts: SliceOptions,
  dtype: str,
) -> tuple[dict[str, FileEntry], list[FileEntry], list[tuple[str, SliceOptions, str]]]:
  """What to do with each file: (entries known now, entries to decode, their decode jobs).

  Unchanged files (same size and modification time) keep their entries; sub-folders the scan
  could not list get an entry too ("sub/"), so a cache lists every skip.
  """
  entries: dict[str, FileEntry] = {}
  for folder, reason in unlisted:
    rel = os.path.relpath(folder, data_dir).replace(os.sep, "/") + "/"
    entries[rel] = FileEntry(rel, 0, 0, {FOLDER_FIELD: rel.split("/", 1)[0]}, skipped=reason)
  jobs: list[tuple[str, SliceOptions, str]] = []
  pending: list[FileEntry] = []
  for f in files:
    rel = os.path.relpath(f.path, data_dir).replace(os.sep, "/")
    st = _stat(f.path)
    if st is None:
      entries[rel] = FileEntry(rel, 0, 0, {FOLDER_FIELD: f.label}, skipped="no such file")
      continue
    labels, attributes, reason = _entry_labels(f.label, table, os.path.abspath(f.path))
    prev = old.get(rel)
    if reason:
      entries[rel] = FileEntry(rel, *st, labels, skipped=reason)
    elif (
      prev is not None
      and (prev.size, prev.mtime_ns) == st
      and prev.skipped != "not in the manifest"
    ):
      entries[rel] = dataclasses.replace(prev, labels=labels, attributes=attributes)
    else:
      pending.append(FileEntry(rel, *st, labels, attributes))
      jobs.append((f.path, opts, dtype))
  return entries, pending, jobs


def _decode_into(
  writer: _ShardWriter,
  pending: list[FileEntry],
  jobs: list[tuple[str, SliceOptions, str]],
  entries: dict[str, FileEntry],
  workers: int | None,
  progress: bool,
) -> float:
  """Decodes the pending files into new shards and fills in their entries.

  Returns:
    Seconds of audio decoded.

  Raises:
    DiskFullError: a shard did not fit; the message says about how much more space is needed.
  """
  done, seconds_decoded = 0, 0.0
  try:
    n_workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    results = _run_jobs(jobs, n_workers)
    for entry, (reason, windows, starts, seconds) in zip(
      pending, progress_bar(results, progress and bool(jobs), "preparing", total=len(jobs))
    ):
      done += 1
      if reason:
        entries[entry.path] = dataclasses.replace(entry, skipped=reason)
        continue
      shard, row = writer.add(windows)
      seconds_decoded += seconds
      entries[entry.path] = dataclasses.replace(
        entry, seconds=seconds, shard=shard, row=row, offsets=tuple(int(s) for s in starts)
      )
    writer.flush()
  except DiskFullError:
    failed = writer.pending_bytes
    writer.discard()
    raise _no_room(writer.folder, writer.bytes_added, failed, done, len(jobs)) from None
  return seconds_decoded


def _finish(
  out: str,
  data_dir: str,
  wanted: dict[str, Any],
  table: Manifest | None,
  entries: dict[str, FileEntry],
  n_files: int,
  n_jobs: int,
  seconds_decoded: float,
  t0: float,
  log: Callable[[str], None] | None,
) -> PrepareReport:
  """Writes `prepare_report.json`, then the new index `cache.json`; returns the report."""
  ordered = [entries[k] for k in sorted(entries)]
  live = sorted({e.shard for e in ordered if not e.skipped})  # shard file numbers in use
  shard_list = [f"{i:05d}.npy" for i in live]
  position = {i: k for k, i in enumerate(live)}
  ordered = [e if e.skipped else dataclasses.replace(e, shard=position[e.shard]) for e in ordered]
  used = [e for e in ordered if not e.skipped]
  skipped = tuple((os.path.join(data_dir, e.path), e.skipped) for e in ordered if e.skipped)
  if log is not None:
    for path, reason in skipped:
      log(one_line(f"skipped {path}: {reason}"))
  report = PrepareReport(
    cache=out,
    files_used=len(used),
    clips=sum(e.count for e in used),
    decoded=n_jobs,
    seconds_decoded=seconds_decoded,
    wall_seconds=time.perf_counter() - t0,
    skipped=skipped,
  )
  # The report keeps every file name exactly (JSON escapes what needs escaping).
  _write_json(
    os.path.join(out, REPORT_FILE),
    {
      "summary": report.summary(),
      "data": data_dir,
      "files_used": report.files_used,
      "clips": report.clips,
      "decoded": report.decoded,
      "seconds_decoded": round(seconds_decoded, 3),
      "wall_seconds": round(report.wall_seconds, 3),
      "skipped": [{"path": p, "reason": r, "kind": reason_kind(r)} for p, r in skipped],
    },
  )
  if not used:
    path, reason = skipped[0]
    raise DataError(
      f"{data_dir}: none of the {n_files} audio files could be used: "
      f"e.g. {path}: {reason} (every reason is in {os.path.join(out, REPORT_FILE)})"
    )
  label_fields = [FOLDER_FIELD] + (list(table.label_fields) if table else [])
  _write_json(
    os.path.join(out, CACHE_FILE),
    {
      "version": CACHE_VERSION,
      "data": data_dir,
      "options": wanted,
      "label_fields": label_fields,
      "attribute_names": list(table.attribute_names) if table else [],
      "vocab": {
        field: sorted({e.labels.get(field, "") for e in used} - {""}) for field in label_fields
      },
      "shards": shard_list,
      "files": [_entry_to_json(e) for e in ordered],
    },
  )
  return report


def _next_shard_index(names: list[str]) -> int:
  numbers = [int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()]
  return 1 + max(numbers, default=-1)


def _entry_to_json(e: FileEntry) -> dict[str, Any]:
  d = dataclasses.asdict(e)
  d["offsets"] = list(e.offsets)
  # JSON has no NaN: an unknown attribute (a manifest's "nan") is stored as null.
  d["attributes"] = {k: v if math.isfinite(v) else None for k, v in e.attributes.items()}
  return d


def _entry_from_json(d: dict[str, Any], shard_names: list[str] | None = None) -> FileEntry:
  """An entry read back; with `shard_names`, its shard becomes that shard file's number."""
  attributes = {k: math.nan if v is None else float(v) for k, v in d.get("attributes", {}).items()}
  e = FileEntry(**{**d, "offsets": tuple(d["offsets"]), "attributes": attributes})
  if shard_names is not None and not e.skipped:
    e = dataclasses.replace(e, shard=int(shard_names[e.shard].split(".")[0]))
  return e


_OPEN_LOCK = threading.Lock()


class PreparedCache:
  """Read access to a prepared cache: clips in source-path order, gathered from memory-mapped shards.

  Pickles without its memory maps (they are reopened on first use), so it can be sent to loader
  worker processes.

  Attributes:
    path: the cache folder.
    options: the slicing options it was made with.
    dtype: the store dtype.
    label_fields: label fields every used file has a value for (at least "folder").
    attribute_names: continuous attributes from the manifest.
    files: the used files' entries, sorted by path.
    skipped: (path, reason) of files not used.
  """

  def __init__(self, path: str):
    info = _read_info(path)
    self.path = path
    opts = dict(info["options"])
    self.dtype = opts.pop("dtype")
    self.options = SliceOptions(**opts)
    self.data = info["data"]
    self.label_fields = tuple(info["label_fields"])
    self.attribute_names = tuple(info["attribute_names"])
    self.vocab = {k: tuple(v) for k, v in info["vocab"].items()}
    self._shard_names = list(info["shards"])
    entries = [_entry_from_json(e) for e in info["files"]]
    self.files = tuple(e for e in entries if not e.skipped)
    self.skipped = tuple((os.path.join(self.data, e.path), e.skipped) for e in entries if e.skipped)
    counts = np.array([e.count for e in self.files], np.int64)  # [F]
    self._file_of_clip = np.repeat(np.arange(len(self.files)), counts)  # [N]
    first_clip = np.cumsum(counts) - counts  # [F]
    within = np.arange(len(self._file_of_clip)) - first_clip[self._file_of_clip]
    self._shard = np.array([e.shard for e in self.files], np.int64)[self._file_of_clip]  # [N]
    self._row = np.array([e.row for e in self.files], np.int64)[self._file_of_clip] + within
    self.offsets = np.concatenate([np.asarray(e.offsets, np.int64) for e in self.files])  # [N]
    self._maps: list[np.ndarray] | None = None

  def __len__(self) -> int:
    return int(self._file_of_clip.shape[0])

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_maps": None}

  @property
  def slice_len(self) -> int:
    return self.options.slice_len

  @property
  def channels(self) -> int:
    return self.options.channels

  @property
  def sample_rate(self) -> int:
    return self.options.sample_rate

  @property
  def sources(self) -> tuple[str, ...]:
    """Source file of every clip, [N] (paths relative to the data folder)."""
    return tuple(self.files[i].path for i in self._file_of_clip)

  def _shards(self) -> list[np.ndarray]:
    # Loader threads call this at once on a fresh cache. np.load parses each header with
    # ast.literal_eval, which is not thread-safe in CPython 3.11 ("AST constructor recursion depth
    # mismatch"), so the maps are opened once, under a lock.
    with _OPEN_LOCK:
      if self._maps is None:
        self._maps = [
          np.load(os.path.join(self.path, SHARD_DIR, n), mmap_mode="r") for n in self._shard_names
        ]
    return self._maps

  def label_field(self, requested: str = "") -> str:
    """The field naming a clip's style: `requested`, the manifest's only field, or "folder"."""
    if requested:
      if requested not in self.label_fields:
        raise DataError(
          f"{self.path}: no label field {requested!r}; valid: {', '.join(self.label_fields)}"
        )
      return requested
    own = [f for f in self.label_fields if f != FOLDER_FIELD]
    if len(own) > 1:
      raise DataError(
        f"{self.path}: label fields {', '.join(own)}: choose one with data.label_field"
      )
    return own[0] if own else FOLDER_FIELD

  def labels(self, field: str = "") -> tuple[np.ndarray, tuple[str, ...]]:
    """Style ids of every clip, int32 [N], and the sorted vocabulary they index.

    Files with an empty value for `field` are not excluded: they get the label "" (callers that
    need every clip labelled can check `"" in vocab`).
    """
    field = self.label_field(field)
    values = [e.labels.get(field, "") for e in self.files]
    vocab = tuple(sorted(set(values)))
    ids = {v: i for i, v in enumerate(vocab)}
    per_file = np.array([ids[v] for v in values], np.int32)  # [F]
    return per_file[self._file_of_clip], vocab

  def attributes(self) -> dict[str, np.ndarray]:
    """Continuous attributes of every clip: name -> float32 [N]."""
    return {
      name: np.array([e.attributes[name] for e in self.files], np.float32)[self._file_of_clip]
      for name in self.attribute_names
    }

  def gather(self, index: np.ndarray) -> np.ndarray:
    """Clips at `index` (any shape [...]) as float32 [..., T, C] in [-1, 1]."""
    index = np.asarray(index)
    flat = index.reshape(-1)
    shards, rows = self._shard[flat], self._row[flat]
    maps = self._shards()
    out = np.empty((flat.shape[0], self.slice_len, self.channels), np.float32)
    for s in np.unique(shards):
      sel = np.flatnonzero(shards == s)
      # Sorted rows read the memory map front to back; the result goes back to batch order.
      order = np.argsort(rows[sel], kind="stable")
      out[sel[order]] = maps[s][rows[sel][order]]
    if self.dtype == "int16":
      out *= 1.0 / INT16_SCALE
    return out.reshape(index.shape + out.shape[1:])


def open_cache(path: str) -> PreparedCache:
  """Opens a prepared cache for reading.

  Raises:
    DataError: `path` is not a cache, or its index cannot be read.
  """
  if not is_cache(path):
    raise DataError(
      f"{path}: not a prepared cache (no {CACHE_FILE}); make one with "
      "`wavegan prepare DATA_DIR --out CACHE`"
    )
  cache = PreparedCache(path)
  cache._shards()  # open the maps here, before any reader thread starts
  return cache
