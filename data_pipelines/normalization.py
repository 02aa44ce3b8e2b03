"""Level normalisation of a file's training windows: to a peak, or to a loudness (ITU-R BS.1770)."""

from __future__ import annotations

import numpy as np

NORMALIZE_MODES = ("peak", "loudness", "none")
NORMALIZE_PEAK = 0.95
LOUDNESS_PEAK_LIMIT = 0.99  # loudness gain never pushes a clip's peak past this


def loudness_gain(x: np.ndarray, sample_rate: int, target_lufs: float) -> float:
  """Gain that brings x [T, C] to `target_lufs` integrated loudness (1.0 for silence)."""
  import pyloudnorm  # pylint: disable=g-import-not-at-top  (scipy import: only when used)

  if x.shape[1] > 5:  # BS.1770 weights at most 5 channels: measure the mixdown instead
    x = x.mean(axis=1, keepdims=True)
  # BS.1770 gates 400 ms blocks; one-shots can be shorter, so the block shrinks to fit (a hair
  # under the clip's length: pyloudnorm compares in floating point and refuses a tie).
  block = min(0.4, x.shape[0] / sample_rate * (1 - 1e-9))
  with np.errstate(divide="ignore"):
    lufs = pyloudnorm.Meter(sample_rate, block_size=block).integrated_loudness(x.astype(np.float64))
  if not np.isfinite(lufs):
    return 1.0
  return float(10.0 ** ((target_lufs - lufs) / 20.0))


def normalize_windows(
  windows: np.ndarray, x: np.ndarray, mode: str, sample_rate: int, target_lufs: float
) -> np.ndarray:
  """Scales one file's windows together, so they keep their relative levels.

  Args:
    windows: the file's windows, float32 [W, S, C], not all silent; scaled in place.
    x: the file's audio the windows were cut from, float32 [T, C] (measured for "loudness").
    mode: one of NORMALIZE_MODES: "peak" (the loudest window's peak to NORMALIZE_PEAK),
      "loudness" (x to `target_lufs`, peak limited to LOUDNESS_PEAK_LIMIT) or "none".
    sample_rate: rate of x in Hz.
    target_lufs: integrated loudness target for "loudness".

  Returns:
    `windows`, scaled, [W, S, C].
  """
  peak = float(np.max(np.abs(windows)))
  if mode == "peak":
    windows *= NORMALIZE_PEAK / peak
  elif mode == "loudness":
    gain = loudness_gain(x, sample_rate, target_lufs)
    windows *= min(gain, LOUDNESS_PEAK_LIMIT / peak)
  return windows
