"""GAN evaluation metrics (wavegan/metrics.py): known values, invariances and brute-force checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wavegan.evaluation import metrics


def _blobs(rng: np.random.Generator, centers: np.ndarray, per: int, scale: float = 0.5):
  """Points [len(centers) * per, D] around each center, shuffled, and their blob ids [N]."""
  ids = np.repeat(np.arange(len(centers)), per)
  x = centers[ids] + scale * rng.normal(size=(len(ids), centers.shape[1]))
  order = rng.permutation(len(ids))
  return x[order], ids[order]


def _with_exact_cov(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray):
  """Samples [n, D] whose sample mean and unbiased covariance are exactly `mean` and `cov`."""
  z = rng.normal(size=(n, len(mean)))
  z -= z.mean(axis=0)
  # Whiten with the sample covariance so the only remaining error is rounding.
  z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)
  return z @ np.linalg.cholesky(cov).T + mean


# ------------------------------------------------------------------------------------------------
# Inception Score.


def test_inception_score_known_values():
  onehot = np.eye(10)[np.arange(200) % 10]  # balanced, confident
  mean, std = metrics.inception_score(onehot)
  assert abs(mean - 10.0) < 1e-6 and std == 0.0
  uniform = np.full((50, 7), 1.0 / 7)
  assert abs(metrics.inception_score(uniform)[0] - 1.0) < 1e-9
  always_three = np.tile(np.eye(5)[3], (40, 1))  # one class for every clip
  assert abs(metrics.inception_score(always_three)[0] - 1.0) < 1e-9


def test_inception_score_splits_are_contiguous_and_give_a_std():
  # First half covers 2 classes (score 2), second half 4 classes (score 4): mean 3, std 1.
  first = np.eye(6)[np.arange(40) % 2]
  second = np.eye(6)[2 + np.arange(40) % 4]
  mean, std = metrics.inception_score(np.concatenate([first, second]), splits=2)
  assert mean == pytest.approx(3.0, abs=1e-9) and std == pytest.approx(1.0, abs=1e-9)
  # One split over all 80 clips sees all 6 classes, in shares 1/4, 1/4, 1/8 x 4.
  whole, whole_std = metrics.inception_score(np.concatenate([first, second]))
  assert whole == pytest.approx(np.exp(2 * 0.25 * np.log(4) + 4 * 0.125 * np.log(8)))
  assert whole_std == 0.0


def test_inception_score_matches_the_formula_and_survives_zeros():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 8)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probs[:, 5] = 0.0  # a class never predicted
  probs /= probs.sum(axis=1, keepdims=True)
  marginal = probs.mean(axis=0)
  nz = probs > 0
  kl = np.array([np.sum(p[m] * np.log(p[m] / marginal[m])) for p, m in zip(probs, nz)])
  with np.errstate(all="raise"):  # no log(0) on the way
    mean, _ = metrics.inception_score(probs.astype(np.float32))
  assert mean == pytest.approx(np.exp(kl.mean()), rel=1e-5)
  assert 1.0 <= mean <= 8.0


def test_inception_score_rejects_bad_input():
  with pytest.raises(ValueError, match="non-negative"):
    metrics.inception_score(np.array([[1.5, -0.5]]))
  with pytest.raises(ValueError, match="splits"):
    metrics.inception_score(np.eye(3), splits=4)
  with pytest.raises(ValueError, match="2-D"):
    metrics.inception_score(np.ones(3) / 3)


# ------------------------------------------------------------------------------------------------
# Frechet distance.


def test_frechet_distance_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(1)
  x = 3.0 * rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
  assert 0.0 <= metrics.frechet_distance(x, x) < 1e-6 * np.var(x)
  # Fewer samples than features: a singular covariance still gives a finite, tiny value.
  few = rng.normal(size=(6, 20))
  value = metrics.frechet_distance(few, few)
  assert np.isfinite(value) and 0.0 <= value < 1e-2 * np.var(few)


def test_frechet_distance_grows_with_a_mean_shift():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(20000, 4))
  y = rng.normal(size=(20000, 4))
  values = [metrics.frechet_distance(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
  assert values == sorted(values) and values[0] < 0.01
  for s, v in zip((0.5, 1.0, 2.0), values[1:]):
    # ||shift||^2 = D s^2, up to the sampling noise of the means (std ~0.04 s here).
    assert v == pytest.approx(4 * s**2, rel=0.01, abs=0.05)


def test_frechet_distance_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(3)
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
  x = _with_exact_cov(rng, 300, mu_a, np.diag(a))
  y = _with_exact_cov(rng, 500, mu_b, np.diag(b))
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 5 + 5
  assert metrics.frechet_distance(x, y) == pytest.approx(expected, abs=1e-8)
  # Symmetric in its arguments, and one feature works too.
  assert metrics.frechet_distance(y, x) == pytest.approx(metrics.frechet_distance(x, y), abs=1e-8)
  x1, y1 = x[:, :1], y[:, :1]
  assert metrics.frechet_distance(x1, y1) == pytest.approx(1.0 + (1.0 - 3.0) ** 2, abs=1e-8)


def test_frechet_distance_checks_shapes():
  with pytest.raises(ValueError, match="at least 2 rows"):
    metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="feature sizes differ"):
    metrics.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------------
# Kernel distance.


def test_kernel_distance_separates_shifted_sets_and_is_seeded():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
  same, same_std = metrics.kernel_distance(x, y, subsets=10, subset_size=100)
  shifted, _ = metrics.kernel_distance(x, y + 1.0, subsets=10, subset_size=100)
  assert shifted > 0.5 and abs(same) < 0.02 * shifted and same_std > 0.0
  again = metrics.kernel_distance(x, y, subsets=10, subset_size=100)
  assert again == (same, same_std)
  assert metrics.kernel_distance(x, y, subsets=10, subset_size=100, seed=1) != again


def test_kernel_distance_matches_the_unbiased_estimator():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
  k = lambda a, b: (a @ b / 3 + 1) ** 3
  m = 6
  within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
  cross = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), repeat=2))
  expected = within / (m * (m - 1)) - 2 * cross / m**2
  # A subset as large as both sets is a permutation of them; MMD^2 does not depend on order.
  mean, std = metrics.kernel_distance(x, y, subsets=3, subset_size=100)
  assert mean == pytest.approx(expected, rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# k-means and NDB.


def test_ndb_bins_recover_separated_blobs_and_are_seeded():
  rng = np.random.default_rng(6)
  truth = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  x, ids = _blobs(rng, truth, per=60)
  centers = metrics._bins(x, 3, seed=0)
  assert centers.shape == (3, 2)
  labels = np.argmin(((x[:, None] - centers[None]) ** 2).sum(-1), axis=1)
  for blob in range(3):
    assert len(np.unique(labels[ids == blob])) == 1  # each bin is pure
  assert sorted(np.argmin(np.linalg.norm(centers[:, None] - truth[None], axis=-1), 1)) == [0, 1, 2]
  np.testing.assert_allclose(np.sort(centers, axis=0), np.sort(truth, axis=0), atol=0.3)
  # The same seed gives the same bins, and so the same NDB.
  np.testing.assert_array_equal(metrics._bins(x, 3, seed=0), centers)
  fake = x[ids != 0]
  assert metrics.ndb(x, fake, k=3, seed=5) == metrics.ndb(x, fake, k=3, seed=5)
  assert metrics.ndb(x, fake, k=3)["ndb"] == 3  # one mode missing: its bin and both others


def test_ndb_with_more_bins_than_distinct_points(recwarn):
  # Three distinct points, five bins: k-means++ seeds coincident centers, two bins stay empty.
  x = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 4, axis=0)
  centers = metrics._bins(x, 5, seed=0)
  assert np.all(np.isfinite(centers))
  out = metrics.ndb(x, x, k=5)
  assert out["k"] == 5 and out["ndb"] == 0 and sum(out["real_share"]) == pytest.approx(1.0)
  assert sorted(out["real_share"])[:2] == [0.0, 0.0]
  assert not recwarn.list  # scipy's empty-cluster warning and 0/0 are expected, not shown


def test_ndb_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(7)
  real = rng.normal(size=(400, 5))
  out = metrics.ndb(real, real, k=20)
  assert out["ndb"] == 0 and out["ndb_over_k"] == 0.0 and out["k"] == 20
  assert out["real_share"] == out["fake_share"] and sum(out["real_share"]) == pytest.approx(1.0)
  # A fresh sample of the same distribution differs in few bins.
  assert metrics.ndb(real, rng.normal(size=(400, 5)), k=20)["ndb_over_k"] <= 0.2
  # k shrinks to len(real) // 2 for small sets.
  assert metrics.ndb(real[:10], real[:10])["k"] == 5


def test_ndb_flags_mode_collapse():
  rng = np.random.default_rng(8)
  centers = 20.0 * rng.normal(size=(10, 4))
  real, _ = _blobs(rng, centers, per=50)
  collapsed, _ = _blobs(rng, centers[:2], per=250)  # only 2 of 10 modes
  out = metrics.ndb(real, collapsed, k=10)
  assert out["ndb"] >= 8 and out["ndb_over_k"] == out["ndb"] / 10
  assert sorted(out["fake_share"])[-2:] == pytest.approx([0.5, 0.5])


# ------------------------------------------------------------------------------------------------
# Nearest-neighbour distance.


def test_nearest_neighbour_distance_of_copies_and_shifted_copies():
  train = 10.0 * np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2)  # [25, 2]
  copies = train[[3, 7, 7, 20]]
  np.testing.assert_array_equal(metrics.nearest_neighbour_distance(copies, train), 0.0)
  shift = np.array([0.3, 0.4])  # length 0.5
  np.testing.assert_allclose(
    metrics.nearest_neighbour_distance(train + shift, train), 0.5, rtol=1e-12
  )


def test_nearest_neighbour_distance_matches_brute_force_in_any_chunking():
  rng = np.random.default_rng(9)
  fake, train = rng.normal(size=(37, 5)), rng.normal(size=(53, 5))
  brute = np.linalg.norm(fake[:, None] - train[None], axis=2).min(axis=1)  # [37]
  for chunk in (1, 8, 37, 1024):
    np.testing.assert_allclose(
      metrics.nearest_neighbour_distance(fake, train, chunk=chunk), brute, rtol=1e-12
    )
  assert metrics.nearest_neighbour_distance(np.zeros((0, 5)), train).shape == (0,)


# ------------------------------------------------------------------------------------------------
# Audio checks.


def test_silence_rate():
  t = np.linspace(0, 1, 1000, endpoint=False)
  tone = np.sin(2 * np.pi * 5 * t)[:, None] * np.ones(2)  # [T, 2]
  # Peaks: 0 (digital silence), -80 dBFS, -50 dBFS, -6 dBFS.
  audio = np.stack([0 * tone, 1e-4 * tone, 10 ** (-50 / 20) * tone, 0.5 * tone])  # [4, T, 2]
  assert metrics.silence_rate(audio) == 0.5
  assert metrics.silence_rate(audio, threshold_db=-40.0) == 0.75
  assert metrics.silence_rate(audio.astype(np.float32), threshold_db=-100.0) == 0.25


def test_clipping_rate():
  t = np.linspace(0, 1, 10000, endpoint=False)
  sine = np.sin(2 * np.pi * 7 * t)
  one_peak = 0.5 * sine
  one_peak[100] = 1.0  # 0.01% at full scale
  rail = 0.5 * sine
  rail[:20] = -1.0  # 0.2% at the rail
  audio = np.stack([one_peak, np.clip(1.5 * sine, -1, 1), np.zeros_like(sine), rail])[..., None]
  assert metrics.clipping_rate(audio) == 0.5
  assert metrics.clipping_rate(audio, min_fraction=1e-4) == 0.75
  assert metrics.clipping_rate(audio, min_fraction=0.01) == 0.25
  with pytest.raises(ValueError, match="non-empty"):
    metrics.clipping_rate(np.zeros((0, 10, 1)))


def _band_limited_noise(n, t=4096, seed=0, cutoff=0.5):
  """White noise with every frequency above `cutoff` x Nyquist removed [n, t, 1]."""
  x = np.random.default_rng(seed).standard_normal((n, t))
  spec = np.fft.rfft(x, axis=1)
  spec[:, int(cutoff * spec.shape[1]) :] = 0
  return np.fft.irfft(spec, n=t, axis=1)[..., None]


def test_spectrum_distance_sees_a_band_the_real_clips_leave_empty():
  real = _band_limited_noise(16)
  assert metrics.average_spectrum(real).sum() == pytest.approx(1.0)
  # Other clips of the same shape, at another level: near 0 (the shape counts, not the level).
  assert metrics.spectrum_distance(3.0 * _band_limited_noise(16, seed=1), real) < 1.0
  # Broadband noise fills the empty upper half: half the bins read up to the 80 dB floor.
  white = np.random.default_rng(2).standard_normal((16, 4096, 1))
  assert metrics.spectrum_distance(white, real) > 40.0


def test_average_spectrum_and_distance_by_hand():
  rng = np.random.default_rng(5)
  # One frame (T = n_fft = 8): the Hann-windowed power spectrum, scaled to sum to 1.
  x = rng.standard_normal((1, 8, 1))
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(8) / 8)
  power = np.abs(np.fft.rfft(x[0, :, 0] * hann)) ** 2
  np.testing.assert_allclose(metrics.average_spectrum(x, n_fft=8), power / power.sum())
  # Frames every n_fft / 2 samples: T = 16 holds frames at 0, 4 and 8, all averaged.
  y = rng.standard_normal((1, 16, 1))
  frames = [np.abs(np.fft.rfft(y[0, s : s + 8, 0] * hann)) ** 2 for s in (0, 4, 8)]
  want = np.sum(frames, axis=0)
  np.testing.assert_allclose(metrics.average_spectrum(y, n_fft=8), want / want.sum())
  # The distance: dB differences, the reference's empty bins floored 80 dB below its max.
  a = metrics.average_spectrum(x, n_fft=8)
  ref_clip = np.cos(2 * np.pi * np.arange(8) / 8)[None, :, None]  # bin 1 (and Hann leakage)
  r = metrics.average_spectrum(ref_clip, n_fft=8)
  floor = r.max() * 1e-8
  db = 10 * np.log10(np.maximum(a, floor)) - 10 * np.log10(np.maximum(r, floor))
  got = metrics.spectrum_distance(x, ref_clip, n_fft=8)
  assert got == pytest.approx(float(np.sqrt(np.mean(db**2))))
  assert metrics.spectrum_distance(ref_clip, ref_clip, n_fft=8) == 0.0


def test_spectrum_distance_by_style_compares_like_with_like():
  low, high = _band_limited_noise(8, seed=3), _band_limited_noise(8, seed=4, cutoff=1.0) * 0.1
  real = np.concatenate([low, high])
  labels = np.repeat([0, 1], 8)
  swapped = np.concatenate([high, low])
  # As whole sets the shapes match; style by style they do not.
  assert metrics.spectrum_distance(swapped, real) < 1.0
  assert metrics.spectrum_distance_by_style(swapped, labels, real, labels) > 10.0
  assert metrics.spectrum_distance_by_style(real[::-1], labels[::-1], real, labels) < 1.0
  assert np.isnan(metrics.spectrum_distance_by_style(real, labels + 5, real, labels))


# ------------------------------------------------------------------------------------------------
# Attack sharpness.


def _burst(rise_samples: int, n: int = 4096, onset: int = 500) -> np.ndarray:
  """Noise under a linear attack of `rise_samples` then a slow decay: [1, n, 1]."""
  env = np.zeros(n)
  env[onset : onset + rise_samples] = np.linspace(0, 1, rise_samples, endpoint=False)
  env[onset + rise_samples :] = np.exp(-np.arange(n - onset - rise_samples) / 2000)
  noise = np.random.default_rng(0).choice([-1.0, 1.0], n)  # unit RMS everywhere
  return (env * noise)[None, :, None]


def test_rise_time_reads_a_known_linear_attack():
  sr = 16000
  for rise in (16, 160, 800):  # 1, 10 and 50 ms
    measured = metrics.rise_time_ms(_burst(rise), sr, window_ms=0.0625)  # one-sample window
    # 10 % to 90 % of a linear ramp is 0.8 of it, to a sample.
    assert measured[0] == pytest.approx(0.8 * rise * 1000 / sr, abs=2 * 1000 / sr), rise
  # Louder or softer, stereo or mono: the same attack.
  x = _burst(160)
  assert metrics.rise_time_ms(0.1 * x, sr)[0] == pytest.approx(
    metrics.rise_time_ms(x, sr)[0], abs=0.07
  )
  assert metrics.rise_time_ms(np.repeat(x, 2, axis=2), sr)[0] == metrics.rise_time_ms(x, sr)[0]
  assert np.isnan(metrics.rise_time_ms(np.zeros((1, 4096, 1)), sr)[0])
  # An earlier, softer event that faded out does not count: the rise is the peak's own.
  early = np.zeros_like(x)
  early[0, 100:300, 0] = 0.95 * x[0, 3000:3200, 0] / np.abs(x[0, 3000:3200, 0]).max()
  both = metrics.rise_time_ms(x + early, sr, window_ms=0.0625)[0]
  assert both == pytest.approx(0.8 * 160 * 1000 / sr, abs=2 * 1000 / sr)


def test_onset_flux_is_larger_for_a_sharp_attack():
  sr = 16000
  sharp, smeared = (metrics.onset_flux_db(_burst(r), sr)[0] for r in (8, 1600))
  assert sharp > 2 * smeared > 0
  assert metrics.onset_flux_db(0.1 * _burst(8), sr)[0] == pytest.approx(sharp)
  assert np.isnan(metrics.onset_flux_db(np.zeros((1, 4096, 1)), sr)[0])
  with pytest.raises(ValueError, match="shorter than one"):
    metrics.onset_flux_db(np.zeros((1, 100, 1)), sr)
