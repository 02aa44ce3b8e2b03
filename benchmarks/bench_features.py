"""Per-clip attributes: our YIN pitch against one built on `librosa.yin`, on built-in corpus clips.

    python benchmarks/bench_features.py                  # 32 clips per style (192), 5 repeats
    python benchmarks/bench_features.py --per-style 8 --repeats 3

`data_pipelines.features.pitch` analyses only the frames within LOUD_DB of a clip's loudest and
decides per frame whether it is periodic at all (noise and silence get NaN). `librosa.yin` gives
an f0 for every frame and no such decision; `librosa_pitch` below is the closest pitch built on
it: the same frames (length, hop, padding), the same loud frames and energy-weighted median, and
librosa's per-frame f0 (with our threshold) in place of ours, without the periodicity decision.
Both are timed on the same clips, interleaved, best of --repeats.

Records (JSON lines):
  clips       how many, of which styles, their length and rate
  pitch       seconds per call of each, the ratio, and how the two answers compare
  brightness  seconds per call of `features.brightness` (librosa's STFT and spectral centroid)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from data_pipelines import corpus, features  # noqa: E402

SAMPLE_RATE = 16000
LENGTH = 16384


def corpus_clips(per_style: int, seed: int = 0) -> np.ndarray:
  """Built-in corpus clips, `per_style` of every style: float32 [N, LENGTH, 1]."""
  clips = [
    corpus.synthesize(s, corpus.clip_rng(seed, s, i), SAMPLE_RATE, LENGTH / SAMPLE_RATE)
    for s in corpus.STYLES
    for i in range(per_style)
  ]
  return np.stack(clips)[:, :, None]


def librosa_pitch(
  clips: np.ndarray, sample_rate: int, fmin: float = 30.0, fmax: float = 2000.0
) -> np.ndarray:
  """`features.pitch` with `librosa.yin` as the per-frame estimator (no periodicity decision)."""
  import librosa

  window = features._scaled(features.YIN_WINDOW, sample_rate)
  hop = features._scaled(features.YIN_HOP, sample_rate)
  frame = window + int(np.ceil(sample_rate / fmin)) + 2
  starts, padded = features._frame_starts(clips.shape[1], frame, hop)
  x, finite = features._mono(clips)  # [n, T]
  x = features._pad_to(x, padded)  # [n, padded]
  f0 = librosa.yin(
    x,
    fmin=fmin,
    fmax=fmax,
    sr=sample_rate,
    frame_length=frame,
    hop_length=hop,
    center=False,
    trough_threshold=features.YIN_THRESHOLD,
  )  # [n, F]
  cs = np.zeros((x.shape[0], padded + 1))
  np.cumsum(np.square(x, dtype=np.float64), axis=1, out=cs[:, 1:])
  power = (cs[:, starts + window] - cs[:, starts]) / window  # [n, F]
  loud = (power >= power.max(axis=1, keepdims=True) * 10.0 ** (-features.LOUD_DB / 10.0)) & (
    power > features.SILENCE_POWER
  )
  f0 = np.where(loud, f0[:, : len(starts)], np.nan)
  weights = np.where(np.isnan(f0), 0.0, power)
  return np.where(finite, features._weighted_median(f0, weights), np.nan).astype(np.float32)


def best_of(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
  """(fastest of `repeats` timed calls in seconds, the last result)."""
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return min(times), out


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--per-style", type=int, default=32, help="clips of each built-in style")
  p.add_argument("--repeats", type=int, default=5, help="timed calls of each; the best counts")
  args = p.parse_args(argv)

  clips = corpus_clips(args.per_style)
  common.emit(
    "clips", n=len(clips), styles=list(corpus.STYLES), samples=LENGTH, sample_rate=SAMPLE_RATE
  )
  # One untimed call each: imports (librosa, numba) and numba's compilation.
  features.pitch(clips[:2], SAMPLE_RATE)
  librosa_pitch(clips[:2], SAMPLE_RATE)
  features.brightness(clips[:2], SAMPLE_RATE)

  meter = common.CpuMeter()
  meter.start()
  ours_s, theirs_s, ours, theirs = [], [], None, None
  for _ in range(args.repeats):  # interleaved: both see the same load
    s, ours = best_of(lambda: features.pitch(clips, SAMPLE_RATE), 1)
    ours_s.append(s)
    s, theirs = best_of(lambda: librosa_pitch(clips, SAMPLE_RATE), 1)
    theirs_s.append(s)
  both = ~np.isnan(ours) & ~np.isnan(theirs)
  common.emit(
    "pitch",
    ours_s=round(min(ours_s), 4),
    librosa_yin_s=round(min(theirs_s), 4),
    librosa_over_ours=round(min(theirs_s) / min(ours_s), 2),
    other_cpu=meter.stop(),
    nan_ours=int(np.isnan(ours).sum()),
    nan_librosa=int(np.isnan(theirs).sum()),
    max_rel_diff_where_both=common.r5(
      float(np.max(np.abs(theirs[both] / ours[both] - 1))) if both.any() else None
    ),
  )
  brightness_s, _ = best_of(lambda: features.brightness(clips, SAMPLE_RATE), args.repeats)
  common.emit("brightness", seconds=round(brightness_s, 4))


if __name__ == "__main__":
  main()
