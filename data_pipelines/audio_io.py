"""Finding audio files in a folder tree and decoding them to float32 `[time, channels]` arrays.

Labels come from the folder layout (`root/<style>/.../file.wav`), the common way sample packs are
organised. Decoding goes through libsndfile (via soundfile) and resampling through soxr; every
failure is reported as a one-line `DataError` that names the file and says what is wrong.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile as sf
import soxr

from wavegan.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".opus")


class DataError(UserError):
  """A user-facing data problem; the message is one line naming the path and what is valid."""


class AudioDecodeError(DataError):
  """One audio file that cannot be used.

  Attributes:
    path: the file.
    reason: short explanation, e.g. "cannot decode (Format not recognised.)" or "contains NaN or
      Inf samples".
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason


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


def scan_folder(root: str) -> list[AudioFile]:
  """Recursively lists the audio files under `root`, labelled by their top-level sub-folder.

  Symbolic links are followed, but each real directory is visited once, so a link cycle cannot
  loop forever (and a second link to an already-seen folder adds no duplicates). Hidden files and
  folders (names starting with ".", e.g. macOS "._x.wav" resource forks) are ignored.

  Args:
    root: folder to scan.

  Returns:
    Audio files sorted by path, so the order (and hence every label id) is deterministic.

  Raises:
    DataError: `root` is not an existing folder.
  """
  if not os.path.isdir(root):
    raise DataError(f"{root}: no such folder")
  root_label = os.path.basename(os.path.normpath(os.path.abspath(root)))
  visited: set[str] = set()
  found: list[AudioFile] = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
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
  return found


def _decode_failure(path: str, err: Exception) -> str:
  """A short reason for a failed read: libsndfile's message without the repeated file path."""
  msg = getattr(err, "error_string", None) or str(err) or type(err).__name__
  msg = msg.splitlines()[0].strip()
  if not os.path.exists(path):
    return "no such file"
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


MIN_SECONDS = 0.01     # shorter files hold no usable sound
MAX_SECONDS = 3600.0   # longer files are not read: one would fill memory (a 10 h WAV is 2.3 GB)


def decode(path: str, sample_rate: int, channels: int = 1, *, min_seconds: float = MIN_SECONDS,
           max_seconds: float = MAX_SECONDS) -> np.ndarray:
  """Reads an audio file as float32 `[time, channels]` at `sample_rate`.

  Args:
    path: audio file (anything libsndfile reads: WAV, FLAC, OGG/Vorbis/Opus, AIFF, MP3).
    sample_rate: output rate in Hz; the file is resampled (soxr, HQ) when its rate differs.
    channels: output channel count (see `_match_channels` for the conversion rules).
    min_seconds: files shorter than this are refused.
    max_seconds: files longer than this are refused before they are read.

  Returns:
    Audio, float32 [T, channels], C-contiguous.

  Raises:
    AudioDecodeError: the file is unreadable or corrupt, empty, shorter than `min_seconds` or
      longer than `max_seconds`, has NaN/Inf samples, or has fewer (but more than one) channels
      than asked for.
    ValueError: `sample_rate` or `channels` is not positive.
  """
  if sample_rate < 1 or channels < 1:
    raise ValueError(f"sample_rate={sample_rate} and channels={channels} must both be >= 1")
  try:
    with sf.SoundFile(path) as f:
      file_rate = f.samplerate
      if f.frames > max_seconds * file_rate:
        raise AudioDecodeError(path, f"longer than {max_seconds:g} s ({f.frames / file_rate:.0f} s)")
      x = f.read(dtype="float32", always_2d=True)                     # [T, C_in]
  except (sf.SoundFileError, RuntimeError, OSError, ValueError, EOFError) as err:
    raise AudioDecodeError(path, _decode_failure(path, err)) from err
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
