"""Decoding one audio file into normalised training windows: `SliceOptions`, `process_file`."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.audio_io import MAX_SECONDS, AudioDecodeError, decode
from data_pipelines.normalization import NORMALIZE_MODES, normalize_windows
from data_pipelines.slicing import loud_enough, slice_windows, trim_leading_silence, window_offsets

SILENCE_PEAK = 1e-6  # -120 dBFS: quieter windows carry nothing G could learn from


@dataclasses.dataclass(frozen=True)
class SliceOptions:
  """How one audio file becomes training windows (everything that decides a cache's content).

  Attributes:
    sample_rate: target rate in Hz; files are resampled to it (soxr HQ).
    slice_len: samples per window T.
    channels: channels per window C (mono mixdown, or channels kept/duplicated).
    mode: "first" (the onset window, for one-shots) or "hop" (every `hop` samples).
    hop: samples between window starts in "hop" mode; 0 means `slice_len` (no overlap).
    pad_mode: windows past a file's end: "zero", "reflect", "loop" or "drop".
    silence_db: leave out windows whose RMS is below this level (dBFS); None keeps every window
      that is not digitally silent (peak at or above -120 dBFS).
    trim_db: drop each file's leading samples quieter than this (dBFS); None = off.
    normalize: "peak" (each file's windows to peak 0.95), "loudness" (each file to
      `loudness_lufs` by ITU-R BS.1770, peak limited to 0.99) or "none".
    loudness_lufs: integrated loudness target for `normalize="loudness"`.
    max_seconds: longer files are refused before they are read (one would fill memory).
  """

  sample_rate: int = 16000
  slice_len: int = 16384
  channels: int = 1
  mode: str = "first"
  hop: int = 0
  pad_mode: str = "zero"
  silence_db: float | None = None
  trim_db: float | None = None
  normalize: str = "peak"
  loudness_lufs: float = -20.0
  max_seconds: float = MAX_SECONDS

  def validate(self) -> SliceOptions:
    """Checks every option; returns self.

    Raises:
      ValueError: an option out of range or not one of its choices.
    """
    if self.sample_rate < 1 or self.slice_len < 1 or self.channels < 1 or self.hop < 0:
      raise ValueError(f"need sample_rate, slice_len, channels >= 1 and hop >= 0; got {self}")
    if self.normalize not in NORMALIZE_MODES:
      raise ValueError(f"normalize={self.normalize!r}: must be one of {NORMALIZE_MODES}")
    window_offsets(1, self.slice_len, self.hop or self.slice_len, self.pad_mode, self.mode)
    return self

  @property
  def hop_samples(self) -> int:
    return self.hop or self.slice_len


def process_file(path: str, opts: SliceOptions) -> tuple[np.ndarray, np.ndarray, int]:
  """Decodes one file and cuts it into normalised training windows.

  The file is decoded (channels matched, resampled), optionally trimmed of leading silence, cut
  into windows (`opts.mode`, `opts.pad_mode`), near-silent windows are left out, and the rest are
  scaled together (`opts.normalize`), so a file's windows keep their relative levels.

  Args:
    path: audio file.
    opts: slicing options.

  Returns:
    windows float32 [W, slice_len, channels] (W >= 1), their start samples int64 [W] (counted
    after any leading-silence trim), and the decoded length in samples at `opts.sample_rate`.

  Raises:
    AudioDecodeError: the file cannot be decoded or yields no usable window; `reason` says why.
  """
  x = decode(path, opts.sample_rate, opts.channels, max_seconds=opts.max_seconds)  # [T, C]
  length = x.shape[0]
  if opts.trim_db is not None:
    x = trim_leading_silence(x, opts.trim_db)
  starts = window_offsets(x.shape[0], opts.slice_len, opts.hop_samples, opts.pad_mode, opts.mode)
  if starts.size == 0:
    reason = (
      "silent" if x.shape[0] == 0 else f"shorter than {opts.slice_len} samples (pad_mode=drop)"
    )
    raise AudioDecodeError(path, reason)
  windows = slice_windows(x, starts, opts.slice_len, opts.pad_mode)  # [W, T, C]
  if opts.silence_db is None:
    keep = np.max(np.abs(windows), axis=(1, 2)) >= SILENCE_PEAK
  else:
    keep = loud_enough(windows, opts.silence_db)
  windows, starts = windows[keep], starts[keep]
  if windows.shape[0] == 0:
    level = f"{opts.silence_db:g} dBFS" if opts.silence_db is not None else "-120 dBFS"
    where = f"in its first {opts.slice_len} samples" if opts.mode == "first" else "in every window"
    raise AudioDecodeError(path, f"silent {where} (below {level})")
  windows = normalize_windows(windows, x, opts.normalize, opts.sample_rate, opts.loudness_lufs)
  return windows, starts, length
