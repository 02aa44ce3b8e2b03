"""The errors a user can cause, and how they are told: one typed family, one line each.

Every mistake in a command's arguments, a config, a job file, a data folder or a model file is a
`UserError` (or a subclass). The command line prints it as one line and exits with 2; the Python
API raises it as it is. This module imports nothing of the project, so every package may use it.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
  """Input that cannot be used: the message says what and where, in one line."""


class ResourceError(UserError):
  """A request that does not fit: the disk, the memory or another limit of this machine."""


class DiskFullError(ResourceError, OSError):
  """A write that ran out of space; nothing was left under a final file name.

  Raised as `DiskFullError(errno.ENOSPC, message)`; prints as the message alone.
  """

  def __str__(self) -> str:
    return str(self.strerror)


class NonFiniteError(UserError):
  """A number that would make garbage: NaN, infinity, or far outside its sane range."""


def one_line(text: str) -> str:
  r"""`text` made safe to print on one line: control characters, line breaks and undecodable
  bytes of file names (surrogates) are escaped (`\n`, `\x00`, `\udcff`)."""
  out = []
  for ch in str(text):
    code = ord(ch)
    if ch == "\\" or ch.isprintable():
      out.append(ch)
    elif 0xD800 <= code <= 0xDFFF:
      out.append(f"\\u{code:04x}")
    else:
      out.append(ch.encode("unicode_escape").decode("ascii"))
  return "".join(out)


def describe_os_error(err: OSError) -> str:
  """An OSError as one line that names the file and says what happened in plain words."""
  words = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EEXIST: "exists",
  }
  what = words.get(err.errno, err.strerror or str(err))
  name = err.filename if err.filename is not None else ""
  return one_line(f"{os.fsdecode(name)}: {what}" if name != "" else what)
