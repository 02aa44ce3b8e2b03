"""Continuous per-clip attributes measured from audio: pitch (YIN), brightness (spectral centroid).

The generator can be conditioned on such attributes, computed from the training clips when the
data is prepared; the same functions then measure generated clips, to check that asking for a
higher pitch really gives a higher pitch. Clips are short one-shots (drums, plucks, gliding toms),
so each clip gets one number describing its loudest part rather than a contour.

Every function takes clips float32 [N, T, C] (mixed to mono first) and returns float32 [N]; a clip
the attribute is undefined for (silence, and noise for pitch) gets NaN, and so does a clip holding
NaN or Inf. All the work is vectorised over clips and frames with numpy; at most `chunk` clips are
processed at a time to bound memory (about 0.5 GB at the default 256 clips of 16384 samples; it
grows with the clips' length), and the results do not depend on `chunk`.

Brightness is librosa's spectral centroid. Pitch is YIN written here rather than `librosa.yin`:
it decides per frame whether the sound is periodic at all (librosa.yin gives every frame an f0,
noise included) and analyses only the loud frames, which makes it about 4x faster than the same
pitch built on librosa.yin (benchmarks/bench_features.py).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import next_fast_len

ATTRIBUTES = ("pitch", "brightness")

# Frame sizes are given at this rate and scaled to the clips' rate, so that a frame spans the same
# time (and the same number of periods of a given pitch) whatever the rate.
REFERENCE_RATE = 16000
YIN_WINDOW = 1024  # samples summed in the difference function: 64 ms, two periods of 30 Hz
YIN_HOP = 512
YIN_THRESHOLD = 0.15  # the first dip of the normalised difference under this is the period
# A frame whose chosen dip is above this is aperiodic: white noise stays near 1 for every lag,
# while a tone, even decaying or gliding, dips well under it at its period.
VOICED_MAX = 0.35
LOUD_DB = 20.0  # pitch is read from the frames within this many dB of the clip's loudest one
STFT_SIZE = 2048  # brightness frames (Hann window, hop a quarter of it)
SILENCE_POWER = 1e-12  # mean square of a -120 dBFS signal: nothing measurable below it


def compute(name: str, clips: np.ndarray, sample_rate: int) -> np.ndarray:
  """The attribute `name` (one of ATTRIBUTES) of each clip [N, T, C], float32 [N].

  Raises:
    ValueError: `name` is not one of ATTRIBUTES, or the clips are not [N, T, C].
  """
  if name == "pitch":
    return pitch(clips, sample_rate)
  if name == "brightness":
    return brightness(clips, sample_rate)
  raise ValueError(f"unknown attribute {name!r}: must be one of {ATTRIBUTES}")


def _check(clips: np.ndarray, sample_rate: int, chunk: int) -> None:
  if np.ndim(clips) != 3:
    raise ValueError(f"want clips [N, T, C]; got shape {np.shape(clips)}")
  if sample_rate < 1 or chunk < 1:
    raise ValueError(f"need sample_rate >= 1 and chunk >= 1; got {sample_rate} and {chunk}")


def _scaled(samples: int, sample_rate: int) -> int:
  """`samples` at REFERENCE_RATE expressed at `sample_rate` (at least 1)."""
  return max(1, int(round(samples * sample_rate / REFERENCE_RATE)))


def _mono(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Channel mean in float32, [n, T, C] -> [n, T], and which clips are finite, bool [n].

  float32 is enough for the FFTs (and twice as fast as float64); the energies, where long sums
  of squares are subtracted from each other, are accumulated in float64. Non-finite clips are
  zeroed, so that NaN and Inf raise no warnings on their way through; callers give them NaN.
  """
  x = clips.mean(axis=2, dtype=np.float32)
  finite = np.isfinite(x).all(axis=1)
  x[~finite] = 0.0
  return x, finite


def _frame_starts(length: int, frame: int, hop: int) -> tuple[np.ndarray, int]:
  """Starts of hop-spaced frames covering `length` samples, and the padded length they need."""
  count = 1 + max(0, -(-(length - frame) // hop))  # ceil: the last frame reaches the clip's end
  return hop * np.arange(count), (count - 1) * hop + frame


def _pad_to(x: np.ndarray, length: int, before: int = 0) -> np.ndarray:
  """Zero-pads x [n, T] to [n, length], `before` zeros first."""
  return np.pad(x, ((0, 0), (before, length - before - x.shape[1])))


def _yin(
  frames: np.ndarray, energy: np.ndarray, window: int, tau_min: int, tau_max: int, sample_rate: int
) -> np.ndarray:
  """YIN f0 in Hz of each frame, NaN where aperiodic; [M].

  de Cheveigné & Kawahara (2002), steps 2-5: difference function, cumulative mean normalised
  difference, absolute threshold, parabolic interpolation.

  Args:
    frames: [M, L], L >= window + tau_max + 2.
    energy: [M, tau_max + 2], sum_{j < window} x_{j + tau}^2 of each frame x at each lag tau.
    window: samples summed in the difference function.
    tau_min: shortest period searched, >= 2 samples.
    tau_max: longest period searched, samples.
    sample_rate: in Hz.
  """
  m, length = frames.shape
  if m == 0:
    return np.zeros(0)
  lags = tau_max + 2  # tau = 0 .. tau_max + 1: the last is the right neighbour for the parabola
  n_fft = next_fast_len(length, real=True)  # 2^a 3^b 5^c: pocketfft is fastest on these
  # r[tau] = sum_{j < W} x_j x_{j + tau}, by FFT: the window correlated with the whole frame. With
  # n_fft >= L no lag we read wraps around (j + tau <= W - 1 + tau_max + 1 < L).
  spec = np.fft.rfft(frames, n_fft)  # [M, K]
  spec_w = np.fft.rfft(frames[:, :window], n_fft)  # [M, K]
  r = np.fft.irfft(np.conj(spec_w) * spec, n_fft)[:, :lags]  # [M, lags]
  # d(tau) = sum_{j < W} (x_j - x_{j + tau})^2, expanded; rounding can push it a hair below 0.
  d = np.maximum(energy[:, :1] + energy - 2.0 * r, 0.0)  # [M, lags]
  # d'(tau) = d(tau) / mean(d(1..tau)), d'(0) = 1: it starts at 1, not at d's trivial zero at lag
  # 0, and stays high at short lags where d is merely small, so the threshold finds the period.
  mean = np.cumsum(d[:, 1:], axis=1) / np.arange(1, lags)  # [M, lags - 1]
  cmnd = np.ones_like(d)  # [M, lags]
  np.divide(d[:, 1:], mean, out=cmnd[:, 1:], where=mean > 0)

  mid = cmnd[:, tau_min : tau_max + 1]  # candidate lags tau_min .. tau_max, [M, S]
  trough = (mid < cmnd[:, tau_min - 1 : tau_max]) & (mid <= cmnd[:, tau_min + 1 : tau_max + 2])
  dip = trough & (mid < YIN_THRESHOLD)
  # The first dip under the threshold (not the deepest: that can be a multiple of the period),
  # else the global minimum (searched only in the frames that need it).
  pick = np.argmax(dip, axis=1)  # [M]
  none = ~dip.any(axis=1)
  pick[none] = np.argmin(mid[none], axis=1)
  rows = np.arange(m)
  # A minimum at the edge of the lag range is no dip at all: the period lies outside the range.
  voiced = trough[rows, pick] & (mid[rows, pick] < VOICED_MAX)
  tau = pick + tau_min
  # The parabola goes through the raw d: d' has a rising denominator that biases its minimum.
  a, b, c = d[rows, tau - 1], d[rows, tau], d[rows, tau + 1]
  curve = a - 2.0 * b + c
  shift = np.divide(0.5 * (a - c), curve, out=np.zeros(m), where=curve > 0)
  period = tau + np.clip(shift, -1.0, 1.0)
  return np.where(voiced, sample_rate / period, np.nan)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Per-row weighted median of values [n, F] (NaN = absent, weight 0) -> [n], NaN if none."""
  order = np.argsort(values, axis=1)  # NaN sorts last
  v = np.take_along_axis(values, order, axis=1)
  cum = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)  # [n, F]
  total = cum[:, -1]
  k = np.argmax(cum >= 0.5 * total[:, None], axis=1)
  return np.where(total > 0, v[np.arange(len(v)), k], np.nan)


def pitch(
  clips: np.ndarray, sample_rate: int, fmin: float = 30.0, fmax: float = 2000.0, chunk: int = 256
) -> np.ndarray:
  """Fundamental frequency in Hz of each clip's loudest part, float32 [N].

  The mono mix is cut into frames (a 64 ms YIN window every 32 ms); the frames within LOUD_DB of
  the clip's loudest are analysed with YIN, and the clip's pitch is the energy-weighted median of
  the periodic ones' f0, so a pluck or a gliding tom is measured where it is loud, not on its tail.
  Clips with no periodic loud frame (noise, silence) get NaN. Callers may take log2.

  Args:
    clips: audio float32 [N, T, C].
    sample_rate: in Hz.
    fmin: lowest f0 searched, Hz.
    fmax: highest f0 searched, Hz.
    chunk: clips processed at a time (bounds memory; does not change the result).

  Raises:
    ValueError: bad shape, or not 0 < fmin < fmax <= sample_rate / 2.
  """
  _check(clips, sample_rate, chunk)
  if not 0 < fmin < fmax <= sample_rate / 2:
    raise ValueError(f"need 0 < fmin < fmax <= sample_rate / 2; got {fmin}, {fmax}, {sample_rate}")
  window = _scaled(YIN_WINDOW, sample_rate)
  hop = _scaled(YIN_HOP, sample_rate)
  tau_min = max(2, int(np.floor(sample_rate / fmax)))
  tau_max = int(np.ceil(sample_rate / fmin))
  frame = window + tau_max + 2  # ~1560 at 16 kHz: the window plus every lag searched
  starts, padded = _frame_starts(clips.shape[1], frame, hop)
  out = np.full(clips.shape[0], np.nan, np.float32)
  for i in range(0, clips.shape[0], chunk):
    x, finite = _mono(clips[i : i + chunk])  # [n, T], [n]
    x = _pad_to(x, padded)  # [n, padded]
    # Energy of the YIN window at every offset, from one running sum of squares per clip: it
    # gives both the frames' loudness and YIN's energy terms at every lag.
    cs = np.zeros((x.shape[0], padded + 1))
    np.cumsum(np.square(x, dtype=np.float64), axis=1, out=cs[:, 1:])
    window_energy = cs[:, window:] - cs[:, :-window]  # [n, padded - window + 1]
    power = window_energy[:, starts] / window  # window mean square [n, F]
    loud = (power >= power.max(axis=1, keepdims=True) * 10.0 ** (-LOUD_DB / 10.0)) & (
      power > SILENCE_POWER
    )  # [n, F]
    # Only the loud frames are gathered (copied) and analysed: [M, L] and [M, lags].
    frames = np.lib.stride_tricks.sliding_window_view(x, frame, axis=1)[:, starts][loud]
    lagged = np.lib.stride_tricks.sliding_window_view(window_energy, tau_max + 2, axis=1)
    f0 = np.full(loud.shape, np.nan)  # [n, F]
    f0[loud] = _yin(frames, lagged[:, starts][loud], window, tau_min, tau_max, sample_rate)
    weights = np.where(np.isnan(f0), 0.0, power)
    out[i : i + chunk] = np.where(finite, _weighted_median(f0, weights), np.nan)
  return out


def brightness(clips: np.ndarray, sample_rate: int, chunk: int = 256) -> np.ndarray:
  """Spectral centroid in Hz of each clip, float32 [N]; NaN for silence.

  Each STFT frame's centroid (`librosa.feature.spectral_centroid`) is its magnitude-weighted mean
  frequency; the clip's is the mean of its frames' weighted by their energy, so quiet tails and
  silence count for little. Frames are centred with zeros beyond the ends (Hann window, hop a
  quarter frame), which gives every sample the same total weight: an onset at sample 0 counts as
  much as the rest.

  Args:
    clips: audio float32 [N, T, C].
    sample_rate: in Hz.
    chunk: clips processed at a time (bounds memory; does not change the result).

  Raises:
    ValueError: bad shape.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  _check(clips, sample_rate, chunk)
  # A multiple of 4 (the hop is exactly a quarter) with a fast FFT size: 2048 at 16 kHz.
  hop = next_fast_len(-(-_scaled(STFT_SIZE, sample_rate) // 4), real=True)
  n_fft = 4 * hop
  out = np.full(clips.shape[0], np.nan, np.float32)
  for i in range(0, clips.shape[0], chunk):
    x, finite = _mono(clips[i : i + chunk])  # [n, T], [n]
    silent = np.square(x, dtype=np.float64).sum(axis=1) <= SILENCE_POWER * x.shape[1]  # [n]
    mag = np.abs(
      librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True, pad_mode="constant")
    )  # [n, K, F]
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sample_rate, n_fft=n_fft)  # [n, 1, F]
    energy = np.square(mag).sum(axis=1, dtype=np.float64)  # [n, F]
    weight = energy.sum(axis=1)  # [n]
    mean = np.divide(
      (energy * centroid[:, 0]).sum(axis=1), weight, out=np.zeros_like(weight), where=weight > 0
    )
    out[i : i + chunk] = np.where(finite & ~silent & (weight > 0), mean, np.nan)
  return out
