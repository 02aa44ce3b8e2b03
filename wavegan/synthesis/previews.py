"""Listening and looking at a run: preview WAVs and a spectrogram grid (one row per style)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import soundfile as sf

from wavegan import dsp
from wavegan.files import atomic_path


def log_spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
  """Mono audio [T] -> log-magnitude STFT in dB [freq, frames], in numpy (`dsp.stft`, xp=np).

  Centred frames with zeros at the ends and the symmetric Hann window (np.hanning).
  """
  x = np.asarray(audio, np.float32)[None]  # [1, T]
  window = np.hanning(n_fft).astype(np.float32)
  spec = dsp.stft(x, n_fft, hop, center=True, pad_mode="constant", window=window, xp=np)
  mag = np.abs(spec[0]).T  # [freq, frames]
  return 20.0 * np.log10(np.maximum(mag, 1e-5))


def grid_stft(sample_rate: int, length: int) -> tuple[int, int]:
  """(n_fft, hop) of a preview spectrogram of `length` samples at `sample_rate`.

  512 and 128 at 16 kHz for clips of up to 65536 samples (256 below 16 kHz). The frame doubles
  with each doubling of the rate (1024 at 44.1 and 48 kHz), so it spans about as many
  milliseconds at any rate, and the hop grows with the clip so that no panel has more than about
  512 frames.
  """
  doublings = max(sample_rate // 16000, 1).bit_length() - 1
  n_fft = 512 << doublings if sample_rate >= 16000 else 256
  return n_fft, max(n_fft // 4, length // 512)


def write_wavs(audio: np.ndarray, names: list[str], out_dir: str, sample_rate: int) -> list[str]:
  """Writes clips [N, T, C] as 16-bit WAVs `out_dir/<name>.wav`, each whole or not at all;
  returns the paths."""
  paths = []
  for clip, name in zip(audio, names):
    path = os.path.join(out_dir, f"{name}.wav")
    with atomic_path(path) as tmp:
      # The temporary's name ends in ".part": the format must be named, not guessed from it.
      sf.write(tmp, np.clip(clip, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    paths.append(path)
  return paths


def save_png(fig: Any, path: str, dpi: int) -> str:
  """Saves a matplotlib figure as a PNG at `path`, whole or not at all; returns `path`."""
  with atomic_path(path) as tmp:
    # savefig guesses the format from the name, and the temporary's ends in ".part".
    fig.savefig(tmp, dpi=dpi, format="png")
  return path


def spectrogram_grid(
  audio: np.ndarray, rows: list[str], path: str, sample_rate: int, title: str = ""
) -> str:
  """Saves a PNG grid of spectrograms: audio [R * K, T, C], row r holds clips r*K .. r*K+K-1.

  Any rate and length: the time axis spans T / sample_rate seconds, the frequency axis 0 to
  sample_rate / 2, and the STFT is sized for both (`grid_stft`).
  """
  import matplotlib

  matplotlib.use("Agg")  # headless: previews are written during training, often over ssh
  import matplotlib.pyplot as plt

  n_rows = len(rows)
  per_row = audio.shape[0] // n_rows
  fig, axes = plt.subplots(n_rows, per_row, figsize=(2.2 * per_row, 1.6 * n_rows), squeeze=False)
  duration = audio.shape[1] / sample_rate
  n_fft, hop = grid_stft(sample_rate, audio.shape[1])
  for r, name in enumerate(rows):
    for k in range(per_row):
      ax = axes[r][k]
      spec = log_spectrogram(audio[r * per_row + k].mean(axis=-1), n_fft, hop)
      ax.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=-80,
        vmax=spec.max(),
        extent=(0, duration, 0, sample_rate / 2000),
      )
      ax.set_xticks([])
      ax.set_yticks([])
      if k == 0:
        ax.set_ylabel(name, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  try:
    save_png(fig, path, dpi=80)
  finally:
    plt.close(fig)
  return path
