"""Cutting decoded audio into fixed-length training windows (numpy only, vectorised).

Two modes:
* `first`: the onset window only, for one-shots whose character is in the attack.
* `hop`: every window starting at 0, hop, 2 * hop, ... inside the clip (like a framing with
  `pad_end`), so a long recording yields many clips and a short one still yields one.

Windows that run past the end of a clip are padded with zeros, by reflection or by looping the
clip, or dropped. Near-silent windows can be skipped, and leading silence trimmed first.
"""

from __future__ import annotations

import numpy as np

PAD_MODES = ("zero", "reflect", "loop", "drop")
SLICE_MODES = ("first", "hop")


def db_to_amplitude(db: float) -> float:
  return float(10.0 ** (db / 20.0))


def trim_leading_silence(x: np.ndarray, threshold_db: float) -> np.ndarray:
  """Drops the samples before the first one louder than `threshold_db` dBFS (any channel).

  Args:
    x: audio, float32 [T, C].
    threshold_db: level in dBFS, e.g. -60.

  Returns:
    A view of x from its first loud sample, [T', C]; empty [0, C] when nothing is that loud.
  """
  loud = np.flatnonzero(np.max(np.abs(x), axis=1) > db_to_amplitude(threshold_db))
  return x[loud[0] :] if loud.size else x[:0]


def window_offsets(
  length: int, slice_len: int, hop: int, pad_mode: str = "zero", mode: str = "hop"
) -> np.ndarray:
  """Start samples of the windows of a clip of `length` samples.

  Args:
    length: clip length in samples.
    slice_len: window length S.
    hop: distance between window starts (mode `hop`), >= 1.
    pad_mode: one of PAD_MODES; with `drop`, windows that run past the end are left out.
    mode: one of SLICE_MODES.

  Returns:
    Offsets, int64 [W] (possibly empty).
  """
  if mode not in SLICE_MODES:
    raise ValueError(f"slice mode {mode!r}: must be one of {SLICE_MODES}")
  if pad_mode not in PAD_MODES:
    raise ValueError(f"pad mode {pad_mode!r}: must be one of {PAD_MODES}")
  if slice_len < 1 or hop < 1:
    raise ValueError(f"slice_len={slice_len}, hop={hop}: both must be >= 1")
  if length <= 0:
    return np.zeros(0, np.int64)
  starts = np.zeros(1, np.int64) if mode == "first" else np.arange(0, length, hop, dtype=np.int64)
  if pad_mode == "drop":
    starts = starts[starts + slice_len <= length]
  return starts


def slice_windows(
  x: np.ndarray, offsets: np.ndarray, slice_len: int, pad_mode: str = "zero"
) -> np.ndarray:
  """Gathers windows [W, S, C] of x [T, C] at `offsets`, padding past the end per `pad_mode`."""
  if offsets.size == 0:
    return np.zeros((0, slice_len, x.shape[1]), np.float32)
  need = int(offsets.max()) + slice_len - x.shape[0]  # samples missing at the end
  if need > 0:
    if pad_mode == "loop":
      x = np.pad(x, ((0, need), (0, 0)), mode="wrap")
    elif pad_mode == "reflect" and x.shape[0] > 1:
      x = np.pad(x, ((0, need), (0, 0)), mode="reflect")
    else:  # zero (a one-sample clip cannot be reflected either)
      x = np.pad(x, ((0, need), (0, 0)))
  index = offsets[:, None] + np.arange(slice_len)[None, :]  # [W, S]
  return np.ascontiguousarray(x[index], dtype=np.float32)  # [W, S, C]


def loud_enough(windows: np.ndarray, threshold_db: float) -> np.ndarray:
  """Windows [W, S, C] whose RMS is at least `threshold_db` dBFS: bool [W]."""
  rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=(1, 2)))
  return rms >= db_to_amplitude(threshold_db)
