"""Watching a run while it trains: TensorBoard events (the curves' PNG is `synthesis.curves`)."""

from __future__ import annotations

import os
import time

import numpy as np

from wavegan.synthesis.curves import as_float


class TensorBoardLogger:
  """Writes scalars, audio and images for TensorBoard under `workdir/tensorboard`.

  Usable as a context manager. tensorboardX is imported here, not at module level, so that
  importing `wavegan.training.monitor` stays cheap.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    """Opens a new event file.

    Args:
      workdir: the run folder; events go to `workdir/tensorboard`.
      start_step: the step training resumes at. When > 0, TensorBoard is told to drop the
        events at steps >= start_step that a killed run wrote after its last checkpoint, so
        each step shows once.
    """
    from tensorboardX import SummaryWriter

    self.logdir = os.path.join(workdir, "tensorboard")
    os.makedirs(self.logdir, exist_ok=True)
    # tensorboardX names event files by the second and opens them with "wb": a writer reopened
    # within the same second (a quick resume) would overwrite the previous file. A nanosecond
    # suffix keeps the names unique and still sorting in time order, which TensorBoard relies on.
    self._writer = SummaryWriter(
      self.logdir,
      purge_step=start_step if start_step > 0 else None,
      filename_suffix=f".{time.time_ns()}",
    )

  def scalars(self, step: int, values: dict[str, float]) -> None:
    """Logs each numeric entry of `values` under its own tag (e.g. "d/loss"); skips the rest.

    NaN and inf are logged as they are: TensorBoard shows them, and hiding them would hide a
    diverged run.
    """
    for tag, value in values.items():
      number = as_float(value)
      if number is not None:
        self._writer.add_scalar(tag, number, global_step=step)

  def audio(self, step: int, tag: str, clip: np.ndarray, sample_rate: int) -> None:
    """Logs one clip [T] or [T, C], mixed to mono and clipped to [-1, 1]."""
    clip = np.asarray(clip, np.float32)
    if clip.ndim == 2:
      clip = clip.mean(axis=-1)
    # Clipping here also keeps tensorboardX from printing a warning for every loud clip.
    clip = np.clip(np.nan_to_num(clip), -1.0, 1.0)
    self._writer.add_audio(tag, clip, global_step=step, sample_rate=sample_rate)

  def image(self, step: int, tag: str, png_path: str) -> None:
    """Logs a PNG file (e.g. a preview spectrogram grid) as an RGB image."""
    from PIL import Image  # Pillow comes with matplotlib; tensorboardX needs it to encode anyway

    with Image.open(png_path) as img:
      pixels = np.asarray(img.convert("RGB"))  # uint8 [H, W, 3]; drops any alpha channel
    self._writer.add_image(tag, pixels, global_step=step, dataformats="HWC")

  def flush(self) -> None:
    """Writes pending events to disk."""
    self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the event file."""
    self._writer.close()

  def __enter__(self) -> TensorBoardLogger:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
