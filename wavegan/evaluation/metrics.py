"""GAN evaluation metrics on arrays: generated clips vs real clips through a reference classifier.

The distribution metrics take what a reference classifier makes of the audio: class
probabilities [N, K] (Inception Score) or embeddings [N, D] (Frechet distance, KID, NDB,
nearest-neighbour distance). The audio checks (`silence_rate`, `clipping_rate`,
`upsampling_artefacts`) take the clips themselves [N, T, C]. The judge's safeguards
(`fit_temperature`, `nearest_by_style`, `accept_mask`) take logits, embeddings and labels. Everything is NumPy/SciPy in float64, so results do not depend on the
accelerator or on JAX's precision settings, and every random choice comes from an explicit seed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import linalg, optimize, special, stats
from scipy.cluster import vq


def _matrix(name: str, x: np.ndarray, min_rows: int = 1) -> np.ndarray:
  """`x` as a float64 [N, D] array with N >= min_rows, or a ValueError naming `name`."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D [N, D], got shape {x.shape}")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
  return x


def _same_width(x: np.ndarray, y: np.ndarray) -> None:
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances [N, M] between rows of a [N, D] and b [M, D].

  The ||a||^2 - 2ab + ||b||^2 expansion is one matrix product instead of an [N, M, D]
  difference tensor; cancellation can leave tiny negatives, so they are clipped to 0.
  """
  aa = np.einsum("nd,nd->n", a, a)[:, None]  # [N, 1]
  bb = np.einsum("md,md->m", b, b)[None, :]  # [1, M]
  return np.maximum(aa - 2.0 * (a @ b.T) + bb, 0.0)  # [N, M]


# ------------------------------------------------------------------------------------------------
# Classifier-output metrics.


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016).

  Args:
    probs: [N, K] class probabilities, one row per clip. Rows are renormalised to sum to 1 so
      float32 softmax outputs are fine; zeros are fine too (0 * log 0 counts as 0).
    splits: the clips are cut into this many contiguous parts, scored separately, as in the
      original implementation.
  Returns:
    (mean, std) of the per-split scores; std is 0.0 for one split. Scores lie in [1, K].
  """
  p = _matrix("probs", probs)
  if np.any(p < 0) or not np.all(np.isfinite(p)):
    raise ValueError("probs must be finite and non-negative")
  totals = p.sum(axis=1, keepdims=True)  # [N, 1]
  if np.any(totals <= 0):
    raise ValueError("every row of probs needs a positive sum")
  if not 1 <= splits <= p.shape[0]:
    raise ValueError(f"splits must be in [1, {p.shape[0]}], got {splits}")
  p = p / totals
  scores = []
  for part in np.array_split(p, splits):  # [n, K] each
    marginal = part.mean(axis=0, keepdims=True)  # [1, K]
    # xlogy makes 0 * log(0 / q) exactly 0; marginal >= part / n, so it is never 0 where part > 0.
    kl = np.sum(special.xlogy(part, part) - special.xlogy(part, marginal), axis=1)  # [n]
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two embedding sets (FID/FAD; Heusel et al.).

  ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) with unbiased covariances.

  Args:
    x: [N, D] embeddings, N >= 2.
    y: [M, D] embeddings, M >= 2.
  Returns:
    The distance, >= 0.
  """
  x = _matrix("x", x, min_rows=2)
  y = _matrix("y", y, min_rows=2)
  _same_width(x, y)
  mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)  # [D]
  # atleast_2d: np.cov returns a 0-d array for one feature.
  s_x = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))  # [D, D]
  s_y = np.atleast_2d(np.cov(y, rowvar=False, ddof=1))  # [D, D]
  with warnings.catch_warnings():
    # Fewer samples than features make S_x S_y singular; scipy warns, and the result is still
    # right (checked below; the ridge handles the cases where it is not finite).
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    covmean = linalg.sqrtm(s_x @ s_y)  # [D, D]
  if not np.all(np.isfinite(covmean)):
    # Singular products (fewer samples than features) can defeat the Schur method; a small
    # ridge makes them well posed at a negligible change of the value (pytorch-fid's remedy).
    ridge = 1e-6 * np.eye(s_x.shape[0])
    covmean = linalg.sqrtm((s_x + ridge) @ (s_y + ridge))
  # S_x S_y has real, non-negative eigenvalues, so any imaginary part is rounding error.
  covmean = np.real(covmean)
  diff = mu_x - mu_y  # [D]
  value = diff @ diff + np.trace(s_x) + np.trace(s_y) - 2.0 * np.trace(covmean)
  # Identical sets give rounding-level negatives; a distance is never below 0.
  return float(max(value, 0.0))


def kernel_distance(
  x: np.ndarray, y: np.ndarray, *, subsets: int = 10, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
  """Kernel Inception/Audio Distance: unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3.

  Unlike the Frechet distance its estimator is unbiased, so it is comparable across sample
  sizes, and it can come out slightly negative when the two sets are alike (Binkowski et al.).

  Args:
    x: [N, D] embeddings.
    y: [M, D] embeddings.
    subsets: how many random subsets to average over.
    subset_size: clips per subset; min(subset_size, N, M) are drawn, without replacement within
      a subset.
    seed: seeds np.random.default_rng, so a seed always gives the same result.
  Returns:
    (mean, std) of the per-subset MMD^2.
  """
  x = _matrix("x", x, min_rows=2)
  y = _matrix("y", y, min_rows=2)
  _same_width(x, y)
  if subsets < 1:
    raise ValueError(f"subsets must be >= 1, got {subsets}")
  m = min(subset_size, x.shape[0], y.shape[0])
  if m < 2:
    raise ValueError(f"subset_size must be >= 2, got {subset_size}")
  d = x.shape[1]
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(subsets):
    a = x[rng.choice(x.shape[0], m, replace=False)]  # [m, D]
    b = y[rng.choice(y.shape[0], m, replace=False)]  # [m, D]
    k_aa = (a @ a.T / d + 1.0) ** 3  # [m, m]
    k_bb = (b @ b.T / d + 1.0) ** 3  # [m, m]
    k_ab = (a @ b.T / d + 1.0) ** 3  # [m, m]
    # Unbiased within-set terms leave out the diagonal (a sample compared with itself).
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    values.append(within - 2.0 * k_ab.mean())
  return float(np.mean(values)), float(np.std(values))


# ------------------------------------------------------------------------------------------------
# Mode coverage and memorisation.


def _bins(x: np.ndarray, k: int, seed: int) -> np.ndarray:
  """k-means centers [k, D] of x [N, D]: `scipy.cluster.vq.kmeans2`, k-means++ seeded by `seed`.

  With fewer distinct points than k, k-means++ seeds coincident centers and some bins stay empty
  (scipy warns); an empty bin holds no real and no fake point, so it is never a different bin.
  """
  with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
    warnings.filterwarnings("ignore", "One of the clusters is empty")
    centers, _ = vq.kmeans2(x, k, iter=50, minit="++", seed=seed)
  return centers


def ndb(
  real: np.ndarray, fake: np.ndarray, *, k: int = 50, alpha: float = 0.05, seed: int = 0
) -> dict:
  """Number of statistically Different Bins (Richardson & Weiss 2018, "On GANs and GMMs").

  The real set is cut into k-means bins; each fake sample falls into the bin of its nearest
  center, and each bin's real and fake shares are compared with a two-sided two-proportion
  z-test. Missing modes and over-produced modes both show up as different bins.

  Args:
    real: [N, D] real embeddings, N >= 2.
    fake: [M, D] generated embeddings, M >= 1.
    k: number of bins; at most N // 2 are used so that bins hold more than one real point.
    alpha: significance level of each bin's test.
    seed: seeds the k-means.
  Returns:
    {"ndb": bins with p < alpha, "k": bins used, "ndb_over_k": ndb / k,
     "real_share": [k] fractions of real points per bin, "fake_share": [k] fractions of fake}.
  """
  real = _matrix("real", real, min_rows=2)
  fake = _matrix("fake", fake)
  _same_width(real, fake)
  k = min(k, real.shape[0] // 2)
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  centers = _bins(real, k, seed)  # [k, D]
  real_labels = np.argmin(_sq_dists(real, centers), axis=1)  # [N], as the fakes are assigned
  fake_labels = np.argmin(_sq_dists(fake, centers), axis=1)  # [M]
  n, m = real.shape[0], fake.shape[0]
  real_share = np.bincount(real_labels, minlength=k) / n  # [k]
  fake_share = np.bincount(fake_labels, minlength=k) / m  # [k]
  pooled = (real_share * n + fake_share * m) / (n + m)  # [k]
  se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m))  # [k]
  # se is 0 only when both shares are 0 (or both 1): no evidence of a difference, so z = 0.
  z = np.divide(real_share - fake_share, se, out=np.zeros(k), where=se > 0)  # [k]
  p_values = 2.0 * stats.norm.sf(np.abs(z))  # [k]
  different = int(np.sum(p_values < alpha))
  return {
    "ndb": different,
    "k": int(k),
    "ndb_over_k": different / k,
    "real_share": real_share.tolist(),
    "fake_share": fake_share.tolist(),
  }


def nearest_neighbour_distance(
  fake: np.ndarray, train: np.ndarray, chunk: int = 1024
) -> np.ndarray:
  """Euclidean distance from each generated embedding to its nearest training embedding.

  Small distances flag memorised training clips. Rows of `fake` are processed `chunk` at a time
  so memory stays at [chunk, len(train)].

  Args:
    fake: [M, D] generated embeddings.
    train: [N, D] training embeddings, N >= 1.
    chunk: fake rows per distance block.
  Returns:
    [M] float64 distances.
  """
  fake = _matrix("fake", fake, min_rows=0)
  train = _matrix("train", train)
  _same_width(fake, train)
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  out = np.empty(fake.shape[0])  # [M]
  for start in range(0, fake.shape[0], chunk):
    block = fake[start : start + chunk]  # [c, D]
    nearest = np.argmin(_sq_dists(block, train), axis=1)  # [c]
    # The expansion finds the neighbour; measuring it directly avoids its cancellation error,
    # so a copied training point gives exactly 0 rather than ~1e-8.
    out[start : start + block.shape[0]] = np.linalg.norm(block - train[nearest], axis=1)
  return out


# ------------------------------------------------------------------------------------------------
# Audio sanity checks.


def _peaks_input(audio: np.ndarray) -> np.ndarray:
  """|audio| as float64 [N, T, C] (or [N, T]), non-empty."""
  audio = np.asarray(audio)
  if audio.ndim < 2 or audio.size == 0:
    raise ValueError(f"audio must be a non-empty [N, T, C], got shape {audio.shape}")
  return np.abs(audio.astype(np.float64))


def silence_rate(audio: np.ndarray, threshold_db: float = -60.0) -> float:
  """Fraction of clips whose peak |x| is below `threshold_db` dBFS (1.0 = 0 dBFS).

  Args:
    audio: [N, T, C] clips in [-1, 1].
    threshold_db: a clip is silent when its peak is below 10^(threshold_db / 20).
  Returns:
    Fraction in [0, 1].
  """
  mag = _peaks_input(audio)  # [N, T, C]
  peaks = mag.reshape(mag.shape[0], -1).max(axis=1, initial=0.0)  # [N]
  return float(np.mean(peaks < 10.0 ** (threshold_db / 20.0)))


def clipping_rate(audio: np.ndarray, level: float = 0.999, min_fraction: float = 0.001) -> float:
  """Fraction of clips in which at least `min_fraction` of the samples reach |x| >= level.

  A single full-scale peak is legitimate; a clip is counted only when enough samples sit at
  the rail to be audible as clipping.

  Args:
    audio: [N, T, C] clips in [-1, 1].
    level: magnitude counted as clipped.
    min_fraction: share of a clip's samples (all channels) that must be clipped.
  Returns:
    Fraction in [0, 1].
  """
  mag = _peaks_input(audio)  # [N, T, C]
  clipped = (mag >= level).reshape(mag.shape[0], -1).mean(axis=1)  # [N]
  return float(np.mean(clipped >= min_fraction))


# ------------------------------------------------------------------------------------------------
# Spectral shape, without a learned model.


def average_spectrum(audio: np.ndarray, n_fft: int = 512, chunk: int = 64) -> np.ndarray:
  """The clips' average power spectrum as a distribution over frequency [n_fft // 2 + 1].

  Periodic Hann frames of n_fft with hop n_fft // 2 over every clip and channel, the power
  averaged over all of them and scaled to sum to 1: the spectral shape, whatever the level.

  Args:
    audio: clips [N, T, C], T >= n_fft.
    n_fft: frame length.
    chunk: clips per FFT block (memory).
  """
  x = np.asarray(audio)
  if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] < n_fft:
    raise ValueError(f"audio must be a non-empty [N, T, C] with T >= {n_fft}, got {x.shape}")
  hop = n_fft // 2
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
  starts = np.arange(0, x.shape[1] - n_fft + 1, hop)
  power = np.zeros(n_fft // 2 + 1)
  for start in range(0, x.shape[0], chunk):
    block = x[start : start + chunk].astype(np.float64).transpose(0, 2, 1)  # [b, C, T]
    frames = block[..., starts[:, None] + np.arange(n_fft)] * window  # [b, C, F, n_fft]
    power += np.sum(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=(0, 1, 2))
  return power / max(float(power.sum()), 1e-300)


def spectrum_distance(
  audio: np.ndarray, reference: np.ndarray, n_fft: int = 512, floor_db: float = 80.0
) -> float:
  """RMS difference (dB) between two sets' average spectral shapes (`average_spectrum`).

  Both are floored `floor_db` below the reference's loudest bin, so a band the reference leaves
  empty counts up to `floor_db` wherever the clips put energy in it, and bins both leave empty
  count 0. No learned embedding is involved, so no artefact can fool it into a match; it sees
  the spectrum only (not timing, not variety).

  Args:
    audio, reference: clips [N, T, C] and [M, T', C'].
  Returns:
    dB >= 0: 0 for the same spectral shape.
  """
  a, r = average_spectrum(audio, n_fft), average_spectrum(reference, n_fft)
  floor = float(r.max()) * 10.0 ** (-floor_db / 10.0)
  diff = 10.0 * np.log10(np.maximum(a, floor)) - 10.0 * np.log10(np.maximum(r, floor))
  return float(np.sqrt(np.mean(diff**2)))


def spectrum_distance_by_style(
  audio: np.ndarray,
  labels: np.ndarray | None,
  reference: np.ndarray,
  ref_labels: np.ndarray | None,
  n_fft: int = 512,
) -> float:
  """`spectrum_distance` of each style's clips to the reference clips of that style, averaged
  over the styles both sets have; with labels None, of the whole sets."""
  if labels is None or ref_labels is None:
    return spectrum_distance(audio, reference, n_fft)
  styles = sorted(set(np.unique(labels)) & set(np.unique(ref_labels)))
  if not styles:
    return math.nan
  return float(
    np.mean(
      [spectrum_distance(audio[labels == k], reference[ref_labels == k], n_fft) for k in styles]
    )
  )


# ------------------------------------------------------------------------------------------------
# Transients: how sharp the attack is.


def _mono(audio: np.ndarray, name: str = "audio") -> np.ndarray:
  x = np.asarray(audio)
  if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] < 8:
    raise ValueError(f"{name} must be a non-empty [N, T, C] with T >= 8, got shape {x.shape}")
  return x.astype(np.float64).mean(axis=2)  # [N, T]


def _per_clip_chunks(fn, audio: np.ndarray, chunk: int) -> np.ndarray:
  """fn(mono clips [b, T]) -> [b], applied `chunk` clips at a time (memory), concatenated."""
  x = np.asarray(audio)
  return np.concatenate([fn(_mono(x[i : i + chunk])) for i in range(0, len(x), chunk)])


def rise_time_ms(
  audio: np.ndarray, sample_rate: int, window_ms: float = 1.0, chunk: int = 64
) -> np.ndarray:
  """The attack's rise time of each clip [N] (ms): its RMS envelope from 10 % to 90 % of its peak.

  The envelope is the RMS over a sliding `window_ms` window ending at each sample (the channels'
  mean first); the rise runs from the last sample before the peak under 10 % of it to the first
  sample after that at 90 % or more (so an earlier event that faded does not count). A drum's
  attack takes about a millisecond; a smeared one takes longer. NaN for a silent clip.

  Args:
    audio: clips [N, T, C].
    sample_rate: Hz.
    window_ms: the envelope's window.
    chunk: clips at a time (memory).
  """
  _mono(audio[:1])  # the shape check, before any work
  w = max(1, round(sample_rate * window_ms / 1000.0))

  def rise(x: np.ndarray) -> np.ndarray:
    n, t = x.shape
    sums = np.cumsum(np.pad(x**2, ((0, 0), (w, 0))), axis=1)  # [n, T + w]
    env = np.sqrt(np.maximum(sums[:, w:] - sums[:, :-w], 0.0) / w)  # [n, T]
    peak_at = np.argmax(env, axis=1)  # [n]
    peak = env[np.arange(n), peak_at][:, None]  # [n, 1]
    idx = np.arange(t)[None, :]
    before = idx <= peak_at[:, None]
    low = np.where(before & (env < 0.1 * peak), idx, -1).max(axis=1)  # [n], -1: none
    after_low = before & (idx > low[:, None])  # the last rise, not an earlier event's
    high = np.where(after_low & (env >= 0.9 * peak), idx, t).min(axis=1)  # [n], <= the peak
    ms = (high - np.maximum(low, 0)) * 1000.0 / sample_rate
    return np.where(peak[:, 0] > 1e-6, ms, np.nan)

  return _per_clip_chunks(rise, audio, chunk)


def onset_flux_db(
  audio: np.ndarray, sample_rate: int, floor_db: float = 80.0, chunk: int = 64
) -> np.ndarray:
  """The attack's spectral flux of each clip [N] (dB): the largest frame-to-frame rise of its
  spectrum, averaged over the bins.

  Hann frames of 16 ms every 4 ms (n_fft the next power of two at the rate); the power in dB
  relative to the clip's loudest bin, floored `floor_db` below it; the flux of a frame is the
  mean over bins of the rise (negative changes count 0) from the frame before; the figure is the
  largest over the clip. An attack that arrives in one frame across the spectrum gives a large
  figure; one spread over several frames, or missing its high frequencies, a smaller one. NaN for
  a silent clip. `chunk` clips at a time (memory).
  """
  n_fft = 1 << max(3, math.ceil(math.log2(sample_rate * 0.016)))
  hop = n_fft // 4
  length = _mono(audio[:1]).shape[1]
  if length < n_fft:
    raise ValueError(f"clips of {length} samples are shorter than one {n_fft}-sample frame")
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
  frames = np.arange(0, length - n_fft + 1, hop)[:, None] + np.arange(n_fft)  # [F, n_fft]

  def flux(x: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(x[:, frames] * window, axis=-1)) ** 2  # [n, F, bins]
    top = power.max(axis=(1, 2), keepdims=True)  # [n, 1, 1]
    floor = np.maximum(top, 1e-300) * 10.0 ** (-floor_db / 10.0)
    db = 10.0 * np.log10(np.maximum(power, floor))
    rises = np.maximum(np.diff(db, axis=1), 0.0).mean(axis=2)  # [n, F - 1]
    return np.where(top[:, 0, 0] > 1e-12, rises.max(axis=1), np.nan)

  return _per_clip_chunks(flux, audio, chunk)


# ------------------------------------------------------------------------------------------------
# Upsampling artefacts.


def upsampling_periods(strides: list[int] | tuple[int, ...]) -> tuple[int, ...]:
  """The output-sample periods of a stack of upsampling layers, shortest first.

  A layer that upsamples by s feeds the rest of the stack on a grid that repeats every
  s * (the strides after it) output samples; transposed convolutions leave tones at that grid's
  harmonics. Five stride-4 layers give (4, 16, 64, 256, 1024).

  Args:
    strides: the layers' strides in the order the generator applies them.
  Returns:
    The cumulative products of the strides from the output end.
  """
  return tuple(int(p) for p in np.cumprod(list(strides)[::-1]))


def upsampling_artefacts(
  audio: np.ndarray,
  sample_rate: int,
  periods: list[int] | tuple[int, ...],
  *,
  radius: int = 32,
  guard: int = 3,
  chunk: int = 64,
) -> dict[int, float]:
  """Spectral peakiness (dB) at the harmonics k * sample_rate / period of each period.

  The clips' mean power spectrum (Hann window, all clips and channels) is read at every harmonic
  below Nyquist: the mean power of the 3 bins nearest the harmonic against what a smooth spectrum
  would give there, the median of the bins between `guard` and `radius` bins away (and no further
  than half-way to the next harmonic), divided by the median-to-mean ratio of the averaged
  spectrum's chi-squared distribution (2 N C degrees of freedom) so that noise reads 0 dB. The
  figure is the median over the harmonics of 10 log10(harmonic power / smooth power): about 0 dB
  for a smooth spectrum, and for real sounds whose few loud partials happen to sit on harmonics
  (a kick's fundamental near 62.5 Hz); high when a comb of tones sits on the grid's harmonics, as
  transposed convolutions leave. Averaging few clips biases noise slightly low (about -0.7 dB for
  one clip, -0.2 dB for four).

  Args:
    audio: clips [N, T, C].
    sample_rate: Hz.
    periods: upsampling periods in samples (see `upsampling_periods`).
    radius: farthest neighbour bin.
    guard: nearest neighbour bin (leakage of the harmonic itself stays out of the reference).
    chunk: clips per FFT block (memory).
  Returns:
    {period: dB}; NaN for a period with no harmonic below Nyquist that has neighbour bins.
  """
  x = np.asarray(audio)
  if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] < 8:
    raise ValueError(f"audio must be a non-empty [N, T, C] with T >= 8, got shape {x.shape}")
  n, t, c = x.shape
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(t) / t)  # periodic Hann [T]
  power = np.zeros(t // 2 + 1)  # [F]
  for start in range(0, n, chunk):
    block = x[start : start + chunk].astype(np.float64) * window[None, :, None]  # [b, T, C]
    power += np.sum(np.abs(np.fft.rfft(block, axis=1)) ** 2, axis=(0, 2))
  power /= n * c
  dof = 2 * n * c
  median_to_mean = stats.chi2.median(dof) / dof
  tiny = 1e-20 * max(float(power.max()), 1e-300)  # digital silence reads 0 dB, not NaN
  nyquist_bin = t // 2
  bins = np.arange(power.size)
  out = {}
  for period in periods:
    spacing = t / period  # bins between harmonics
    reach = min(radius, spacing / 2.0)
    ratios = []  # [harmonics] dB
    k = 1
    while k * sample_rate / period < sample_rate / 2.0:
      centre = k * spacing
      r = int(round(centre))
      dist = np.abs(bins - centre)
      near = (dist >= guard) & (dist <= reach) & (bins >= 1) & (bins < nyquist_bin)
      if near.any() and r + 1 <= nyquist_bin:
        peak = power[max(r - 1, 0) : r + 2].mean()
        smooth = np.median(power[near]) / median_to_mean
        ratios.append(10.0 * np.log10((peak + tiny) / (smooth + tiny)))
      k += 1
    out[int(period)] = float(np.median(ratios)) if ratios else float("nan")
  return out


# ------------------------------------------------------------------------------------------------
# The judge's safeguards: calibration and the "unlike any real clip" reject test.


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  return logits - special.logsumexp(logits, axis=1, keepdims=True)


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(logits / temperature) [N, K] in float64."""
  z = _matrix("logits", logits, min_rows=0) / float(temperature)
  return np.exp(_log_softmax(z))


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  """Mean negative log-likelihood of `labels` [N] under softmax(logits [N, K] / temperature)."""
  z = _matrix("logits", logits) / float(temperature)
  y = np.asarray(labels, int)
  return float(-np.mean(_log_softmax(z)[np.arange(z.shape[0]), y]))


def fit_temperature(
  logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 50.0)
) -> float:
  """Temperature scaling (Guo et al. 2017): the one T > 0 that minimises the NLL of
  softmax(logits / T) on labelled held-out data.

  Log-probabilities work as logits: a per-row constant does not change the softmax.

  Args:
    logits: [N, K] float.
    labels: [N] true class ids.
    bounds: search interval of T.
  Returns:
    T (1.0 keeps the classifier as it is; above 1 softens over-confident outputs).
  """
  z = _matrix("logits", logits)
  y = np.asarray(labels, int)
  if y.shape != (z.shape[0],) or np.any(y < 0) or np.any(y >= z.shape[1]):
    raise ValueError(f"labels must be [{z.shape[0]}] ids in [0, {z.shape[1]})")
  if not np.all(np.isfinite(z)):
    raise ValueError("logits must be finite")
  lo, hi = np.log(bounds[0]), np.log(bounds[1])
  res = optimize.minimize_scalar(
    lambda log_t: temperature_nll(z, y, np.exp(log_t)),
    bounds=(lo, hi),
    method="bounded",
    options={"xatol": 1e-6},
  )
  return float(np.exp(res.x))


def nearest_by_style(
  emb: np.ndarray, styles: np.ndarray, ref_emb: np.ndarray, ref_styles: np.ndarray
) -> np.ndarray:
  """Distance from each embedding to the nearest reference embedding of its own style.

  Args:
    emb: [N, D] embeddings.
    styles: [N] the style each row is meant to have.
    ref_emb: [M, D] reference (real training) embeddings.
    ref_styles: [M] their styles.
  Returns:
    [N] float64 distances; inf where the style has no reference.
  """
  emb = _matrix("emb", emb, min_rows=0)
  ref_emb = _matrix("ref_emb", ref_emb)
  _same_width(emb, ref_emb)
  styles, ref_styles = np.asarray(styles), np.asarray(ref_styles)
  out = np.full(emb.shape[0], np.inf)
  for s in np.unique(styles):
    rows, refs = styles == s, ref_styles == s
    if refs.any():
      out[rows] = nearest_neighbour_distance(emb[rows], ref_emb[refs])
  return out


def style_limits(
  dist: np.ndarray, styles: np.ndarray, num_styles: int, q: float = 0.95
) -> np.ndarray:
  """The q-quantile of real clips' nearest-real distances per style [K] (NaN: no clip)."""
  dist, styles = np.asarray(dist, np.float64), np.asarray(styles)
  return np.array(
    [
      np.quantile(dist[styles == s], q) if np.any(styles == s) else np.nan
      for s in range(num_styles)
    ]
  )


def leave_one_out_limits(dist: np.ndarray, styles: np.ndarray, q: float = 0.95) -> np.ndarray:
  """For each real clip, its style's q-quantile of the OTHER real clips' distances [N].

  Scoring real clips against limits they helped set would pass them by construction; leaving
  each clip out makes the real clips' acceptance rate an honest one. NaN for a clip alone in
  its style.
  """
  dist, styles = np.asarray(dist, np.float64), np.asarray(styles)
  out = np.full(dist.shape[0], np.nan)
  for i in range(dist.shape[0]):
    others = (styles == styles[i]) & (np.arange(dist.shape[0]) != i)
    if others.any():
      out[i] = np.quantile(dist[others], q)
  return out


def accept_mask(
  pred: np.ndarray, asked: np.ndarray, dist: np.ndarray, limits: np.ndarray
) -> np.ndarray:
  """bool [N]: a clip is accepted for its asked-for style when the classifier predicts that style
  AND its nearest same-style real clip is no farther than the limit (NaN limits reject).

  Args:
    pred: [N] predicted style ids.
    asked: [N] asked-for style ids.
    dist: [N] distances to the nearest real clip of the asked-for style.
    limits: [N] the largest distance accepted for each clip.
  """
  limits = np.asarray(limits, np.float64)
  with np.errstate(invalid="ignore"):
    near = np.asarray(dist, np.float64) <= limits
  return (np.asarray(pred) == np.asarray(asked)) & near & np.isfinite(limits)
