"""Finding audio files in a folder tree and decoding them to float32 `[time, channels]` arrays.

Labels come from the folder layout (`root/<style>/.../file.wav`), the common way sample packs are
organised. Decoding goes through libsndfile (via soundfile) and resampling through soxr; every
failure is reported as a one-line `DataError` that names the file and says what is wrong, with
odd characters of file names (line breaks, control characters, undecodable bytes) escaped.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable

import numpy as np
import soundfile as sf
import soxr

from data_pipelines.containers import declares_length, flac_truncation, truncation
from wavegan.errors import UserError, one_line

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".opus")


class DataError(UserError):
  """A user-facing data problem; the message is one line naming the path and what is valid.

  The message is escaped with `one_line` here, so a file name holding a line break or a control
  character can never split a log line or move the terminal's cursor.
  """

  def __init__(self, message: str):
    super().__init__(one_line(message))


class AudioDecodeError(DataError):
  """One audio file that cannot be used.

  Attributes:
    path: the file, exactly as given (not escaped).
    reason: short one-line explanation, e.g. "cannot decode (Format not recognised.)",
      "truncated: header says 48000 frames, file holds 31000" or "permission denied".
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = one_line(reason)


@dataclasses.dataclass(frozen=True)
class AudioFile:
  """An audio file found by `scan_folder`.

  Attributes:
    path: file path (root joined with the path relative to it).
    label: first-level sub-folder under the root, or the root's own name for files directly in it.
  """

  path: str
  label: str


def is_audio_path(path: str) -> bool:
  """Whether `path` has one of `AUDIO_EXTENSIONS` (case-insensitive)."""
  return path.lower().endswith(AUDIO_EXTENSIONS)


def os_reason(err: OSError) -> str:
  """A short reason for a file that cannot be read, in plain words ("permission denied")."""
  words = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
  }
  return words.get(err.errno, f"cannot read ({err.strerror or type(err).__name__})")


def check_folder(root: str, what: str = "folder") -> None:
  """Refuses a `root` that is missing, a file, or unreadable, in one line.

  Raises:
    DataError: e.g. "x.wav: is a file, not a folder".
  """
  if os.path.isdir(root):
    if not os.access(root, os.R_OK | os.X_OK):
      raise DataError(f"{root}: permission denied (cannot list the {what})")
    return
  if os.path.exists(root):
    raise DataError(f"{root}: is a file, not a folder")
  raise DataError(f"{root}: no such {what}")


def scan_folder(root: str, skipped: list[tuple[str, str]] | None = None) -> list[AudioFile]:
  """Recursively lists the audio files under `root`, labelled by their top-level sub-folder.

  Symbolic links are followed, but each real directory is visited once, so a link cycle cannot
  loop forever (and a second link to an already-seen folder adds no duplicates). Hidden files and
  folders (names starting with ".", e.g. macOS "._x.wav" resource forks) are ignored. A sub-folder
  that cannot be listed is never passed over in silence: it goes to `skipped`.

  Args:
    root: folder to scan.
    skipped: receives (folder path ending in a separator, reason) for every sub-folder that cannot
      be listed, e.g. "permission denied"; without it, the first such folder raises.

  Returns:
    Audio files sorted by path, so the order (and hence every label id) is deterministic.

  Raises:
    DataError: `root` is not an existing, readable folder (or, without `skipped`, a sub-folder
      cannot be listed).
  """
  check_folder(root)
  root_label = os.path.basename(os.path.normpath(os.path.abspath(root)))
  visited: set[str] = set()
  found: list[AudioFile] = []
  unlisted: list[tuple[str, str]] = []
  on_error = _unlisted_recorder(root, unlisted)
  for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in visited:
      dirnames[:] = []  # already walked through another link: prune to break cycles
      continue
    visited.add(real)
    # Sorting in place fixes the walk order, so which link "wins" a duplicate is deterministic.
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    rel_parts = os.path.relpath(dirpath, root).split(os.sep)
    label = root_label if rel_parts == ["."] else rel_parts[0]
    for name in filenames:
      path = os.path.join(dirpath, name)
      if name.startswith(".") or not is_audio_path(name) or not os.path.isfile(path):
        continue
      found.append(AudioFile(path=path, label=label))
  found.sort(key=lambda f: f.path)
  unlisted.sort()
  if skipped is None and unlisted:
    raise DataError(f"{unlisted[0][0]}: {unlisted[0][1]}")
  if skipped is not None:
    skipped.extend(unlisted)
  return found


def _unlisted_recorder(root: str, out: list[tuple[str, str]]) -> Callable[[OSError], None]:
  """`os.walk`'s `onerror`: records each folder it cannot list (the root itself raises)."""
  top = os.path.normpath(root)

  def record(err: OSError) -> None:
    folder = os.fsdecode(err.filename) if err.filename is not None else root
    if os.path.normpath(folder) == top:
      raise DataError(f"{root}: {os_reason(err)} (cannot list the folder)")
    out.append((os.path.join(folder, ""), os_reason(err)))

  return record


def _decode_failure(path: str, err: Exception) -> str:
  """A short reason for a failed read: libsndfile's message without the repeated file path."""
  if isinstance(err, OSError) and err.errno is not None:
    return os_reason(err)
  msg = getattr(err, "error_string", None) or str(err) or type(err).__name__
  msg = msg.splitlines()[0].strip()
  if not os.path.exists(path):
    return "no such file"
  if not os.access(path, os.R_OK):  # libsndfile says only "System error."
    return "permission denied"
  if "does not exist" in msg:  # libsndfile's misleading text for some corrupt files that do exist
    msg = "corrupt or not a supported audio format"
  return f"cannot decode ({msg})"


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
  """Converts `[T, C_in]` audio to `[T, channels]`.

  Mono output is the mean of all channels; a mono file is duplicated to fill more channels; a
  file with extra channels keeps its first `channels`.

  Args:
    x: audio, float32 [T, C_in].
    channels: wanted channel count, >= 1.

  Returns:
    Audio, float32 [T, channels].
  """
  c_in = x.shape[1]
  if c_in == channels:
    return x
  if channels == 1:
    return x.mean(axis=1, keepdims=True, dtype=np.float32)  # [T, 1]
  if c_in == 1:
    return np.repeat(x, channels, axis=1)  # [T, channels]
  if c_in > channels:
    return x[:, :channels]
  raise ValueError(f"cannot make {channels} channels from a {c_in}-channel file")


MIN_SECONDS = 0.01  # shorter files hold no usable sound
MAX_SECONDS = 3600.0  # longer files are not read: one would fill memory (a 10 h WAV is 2.3 GB)


def decode(
  path: str,
  sample_rate: int,
  channels: int = 1,
  *,
  min_seconds: float = MIN_SECONDS,
  max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
  """Reads an audio file as float32 `[time, channels]` at `sample_rate`.

  A truncated file, one whose data is cut short of what its header declares, is refused with a
  reason starting "truncated: " (e.g. "truncated: header says 48000 frames, file holds 31000"),
  never decoded as far as it goes: its end is an abrupt cut that would teach the generator
  clicks, and such a file is most often a broken copy. libsndfile decodes most cut files without
  a word, so the container is checked first (`containers.truncation`); see `containers` for what
  is measured for each format.

  Args:
    path: audio file (anything libsndfile reads: WAV, FLAC, OGG/Vorbis/Opus, AIFF, MP3).
    sample_rate: output rate in Hz; the file is resampled (soxr, HQ) when its rate differs.
    channels: output channel count (see `_match_channels` for the conversion rules).
    min_seconds: files shorter than this are refused.
    max_seconds: files longer than this are refused before they are read.

  Returns:
    Audio, float32 [T, channels], C-contiguous.

  Raises:
    AudioDecodeError: the file is unreadable (e.g. "permission denied"), truncated or corrupt,
      empty, shorter than `min_seconds` or longer than `max_seconds`, has NaN/Inf samples, or has
      fewer (but more than one) channels than asked for.
    ValueError: `sample_rate` or `channels` is not positive.
  """
  if sample_rate < 1 or channels < 1:
    raise ValueError(f"sample_rate={sample_rate} and channels={channels} must both be >= 1")
  try:
    # A cut file is skipped, not shortened: libsndfile would silently decode the frames present.
    cut = truncation(path)
    if cut:
      raise AudioDecodeError(path, cut)
    # Bytes, not str: soundfile encodes a str path strictly, which fails on a name holding bytes
    # that are not valid in the file system's encoding (Python shows them as surrogates).
    with sf.SoundFile(os.fsencode(path)) as f:
      file_rate, declared, container = f.samplerate, f.frames, f.format
      if declared > max_seconds * file_rate:
        raise AudioDecodeError(
          path, f"longer than {max_seconds:g} s ({declared / file_rate:.0f} s)"
        )
      x = f.read(dtype="float32", always_2d=True)  # [T, C_in]
  except (sf.SoundFileError, RuntimeError, OSError, ValueError, EOFError) as err:
    # FLAC's decoder fails at a cut; its frame headers tell a cut from corruption elsewhere.
    raise AudioDecodeError(path, flac_truncation(path) or _decode_failure(path, err)) from err
  # Fewer frames than libsndfile itself announced (an MP3's Xing/Info count, say) is a cut too;
  # an MP3 without such a header only has an estimate from its size, which proves nothing.
  if x.shape[0] < declared and (container != "MP3" or declares_length(path)):
    raise AudioDecodeError(
      path, f"truncated: header says {declared} frames, file holds {x.shape[0]}"
    )
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise AudioDecodeError(path, "empty (0 samples)")
  if x.shape[0] < min_seconds * file_rate:
    raise AudioDecodeError(path, f"shorter than {1000 * min_seconds:g} ms ({x.shape[0]} samples)")
  if not np.isfinite(x).all():
    raise AudioDecodeError(path, "contains NaN or Inf samples")
  try:
    x = _match_channels(x, channels)
  except ValueError as err:
    raise AudioDecodeError(path, str(err)) from err
  if file_rate != sample_rate:
    x = soxr.resample(np.ascontiguousarray(x), file_rate, sample_rate, quality="HQ")  # [T', C]
    if x.shape[0] == 0:
      raise AudioDecodeError(path, f"too short to resample from {file_rate} Hz to {sample_rate} Hz")
  return np.ascontiguousarray(x, dtype=np.float32)
