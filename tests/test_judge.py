"""The hardened judge and the upsampling-artefact measure (wavegan/evaluation): synthetic checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types

import jax
import numpy as np
import pytest
from flax import nnx

from wavegan import inputs
from wavegan.evaluation import metrics, scores
from wavegan.evaluation.classifier import (
  CLASSIFIER_VERSION,
  Augmentation,
  Classifier,
  ClassifierConfig,
  StyleNet,
  augment,
  corpus_key,
)
from wavegan.evaluation.report import markdown
from wavegan.presets import preset

SR = 16000
T = 16384
PERIODS = (4, 16, 64, 256)


def _noise(n: int = 32, seed: int = 0) -> np.ndarray:
  return 0.1 * np.random.default_rng(seed).standard_normal((n, T, 1))


def _tone(hz: float) -> np.ndarray:
  return 0.5 * np.sin(2 * np.pi * hz * np.arange(T) / SR + 0.3)[None, :, None]  # [1, T, 1]


# ------------------------------------------------------------------------------------------------
# Upsampling artefacts.


def test_upsampling_periods_are_the_cumulative_strides_from_the_output_end():
  assert metrics.upsampling_periods([4] * 5) == (4, 16, 64, 256, 1024)
  assert metrics.upsampling_periods([4, 4, 2]) == (2, 8, 32)


def test_white_noise_reads_about_zero_db():
  got = metrics.upsampling_artefacts(_noise(), SR, PERIODS)
  assert set(got) == set(PERIODS)
  for p in (16, 64, 256):  # several harmonics each; period 4 has one (4 kHz) and varies more
    assert abs(got[p]) < 0.75, (p, got)
  assert abs(got[4]) < 2.0, got


def test_a_62_5_hz_pulse_train_reads_high_at_period_256():
  pulse = np.zeros(T)
  pulse[::256] = 0.5  # 62.5 Hz = 16000 / 256, about 10 dB below the noise's RMS
  clean = metrics.upsampling_artefacts(_noise(), SR, PERIODS)
  dirty = metrics.upsampling_artefacts(_noise() + pulse[None, :, None], SR, PERIODS)
  assert dirty[256] > 3.0 and dirty[256] - clean[256] > 3.0, (clean, dirty)


def test_a_comb_reads_high_only_on_the_grid_it_sits_on_and_a_lone_tone_does_not():
  floor = 0.1 * _noise(8, seed=1)
  comb = sum(_tone(hz) for hz in (1000.0, 3000.0, 5000.0, 7000.0))  # 4 of period 16's 7 harmonics
  got = metrics.upsampling_artefacts(comb + floor, SR, PERIODS)
  assert got[16] > 20.0, got
  # Period 4's one harmonic (4 kHz) and most of period 64's and 256's are off the comb.
  assert abs(got[4]) < 2.0 and abs(got[64]) < 2.0 and abs(got[256]) < 2.0, got
  # One loud partial (a note) is no comb, on a harmonic (1 kHz) or between them.
  for hz in (1000.0, 1031.25):
    lone = metrics.upsampling_artefacts(_tone(hz) + floor, SR, PERIODS)
    assert all(abs(v) < 2.0 for v in lone.values()), (hz, lone)


def test_digital_silence_reads_zero():
  got = metrics.upsampling_artefacts(np.zeros((2, 1024, 1)), SR, (4, 16))
  assert got == {4: 0.0, 16: 0.0}


def test_artefacts_reject_bad_shapes():
  with pytest.raises(ValueError, match="N, T, C"):
    metrics.upsampling_artefacts(np.zeros((T, 1)), SR, PERIODS)


# ------------------------------------------------------------------------------------------------
# Calibration.


def _labelled_logits(temperature: float, n: int = 4000, k: int = 5, seed: int = 0):
  """Logits scaled by `temperature` [n, k] and labels drawn from softmax(unscaled logits) [n]."""
  rng = np.random.default_rng(seed)
  z = 2.0 * rng.standard_normal((n, k))
  p = np.exp(z - z.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  labels = np.array([rng.choice(k, p=row) for row in p])
  return z * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
  logits, labels = _labelled_logits(true_t)
  t = metrics.fit_temperature(logits, labels)
  assert abs(t / true_t - 1.0) < 0.1, (t, true_t)
  nll = metrics.temperature_nll(logits, labels, t)
  assert nll <= metrics.temperature_nll(logits, labels, t * 1.2)
  assert nll <= metrics.temperature_nll(logits, labels, t / 1.2)
  # Log-probabilities are logits too: the per-row constant does not move the fit.
  logp = np.log(metrics.calibrated_probs(logits, 1.0))
  assert metrics.fit_temperature(logp, labels) == pytest.approx(t, rel=1e-3)


def test_calibrated_probs_match_a_hand_softmax():
  logits = np.array([[2.0, 0.0, -1.0]])
  e = np.exp(logits[0] / 2.0)
  np.testing.assert_allclose(metrics.calibrated_probs(logits, 2.0)[0], e / e.sum(), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# The reject test.


def test_nearest_by_style_matches_brute_force():
  rng = np.random.default_rng(0)
  ref, ref_s = rng.normal(size=(20, 3)), np.arange(20) % 3
  x, xs = rng.normal(size=(7, 3)), np.array([0, 1, 2, 0, 1, 2, 0])
  got = metrics.nearest_by_style(x, xs, ref, ref_s)
  want = [
    min(np.linalg.norm(x[i] - ref[j]) for j in range(20) if ref_s[j] == xs[i]) for i in range(7)
  ]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert np.isinf(metrics.nearest_by_style(x[:1], np.array([5]), ref, ref_s)[0])


def test_reject_test_accepts_a_near_embedding_and_rejects_a_far_one():
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [10.0, 0.0]])
  train_s = np.arange(40) % 2
  train = centres[train_s] + 0.5 * rng.normal(size=(40, 2))
  held_s = np.arange(20) % 2
  held = centres[held_s] + 0.5 * rng.normal(size=(20, 2))
  limits = metrics.style_limits(metrics.nearest_by_style(held, held_s, train, train_s), held_s, 2)
  assert np.all(limits > 0) and np.all(limits < 2.0)
  fake = np.array([train[0] + 0.01, [0.0, 50.0], train[0] + 0.01, [10.0, 0.0]])
  asked = np.array([0, 0, 1, 1])
  pred = np.array([0, 0, 0, 1])  # the third is predicted wrong; the rest as asked
  dist = metrics.nearest_by_style(fake, asked, train, train_s)
  ok = metrics.accept_mask(pred, asked, dist, limits[asked])
  # near and right: accepted; far: rejected; right place, wrong prediction: rejected
  np.testing.assert_array_equal(ok, [True, False, False, True])
  assert not metrics.accept_mask(np.array([0]), np.array([0]), np.array([0.0]), np.array([np.nan]))[
    0
  ]


def test_leave_one_out_limits_by_hand():
  dist = np.array([1.0, 2.0, 3.0, 10.0, 5.0])
  styles = np.array([0, 0, 0, 0, 1])
  got = metrics.leave_one_out_limits(dist, styles, q=1.0)
  np.testing.assert_array_equal(got[:4], [10.0, 10.0, 10.0, 3.0])
  assert np.isnan(got[4])  # alone in its style
  np.testing.assert_allclose(metrics.style_limits(dist, styles, 3, q=0.5), [2.5, 5.0, np.nan])


# ------------------------------------------------------------------------------------------------
# The hardened classifier's augmentation and cache key.


def test_augmentation_keeps_shapes_and_is_identity_at_probability_zero():
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 4096, 2)).astype(np.float32)
  same = augment(x, np.random.default_rng(1), Augmentation(p=0.0))
  assert same.dtype == np.float32 and same.shape == x.shape
  np.testing.assert_array_equal(same, x)
  assert same is not x
  changed = augment(x, np.random.default_rng(1), Augmentation(p=1.0))
  assert changed.shape == x.shape and changed.dtype == np.float32 and np.all(np.isfinite(changed))
  assert np.all(np.any(changed != x, axis=(1, 2)))  # every clip changed
  # The draws do not depend on p: the stream continues at the same place.
  a, b = np.random.default_rng(3), np.random.default_rng(3)
  augment(x, a, Augmentation(p=0.0))
  augment(x, b, Augmentation(p=1.0))
  assert a.random() == b.random()


def test_a_pure_polarity_and_gain_change_by_hand():
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 512, 1)).astype(np.float32)
  aug = Augmentation(p=1.0, min_gain=0.5, max_shift=0.0, min_snr_db=300, max_snr_db=300, max_mask=0)
  y = augment(x, np.random.default_rng(2), aug)
  ratio = y[:, :, 0] / x[:, :, 0]  # one negative gain per clip
  np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)
  assert np.all((-1.0 <= ratio[:, 0]) & (ratio[:, 0] <= -0.5))


def test_the_reference_key_is_unchanged_and_the_hardened_key_differs():
  cfg = ClassifierConfig(steps=7)
  old = hashlib.sha256(
    json.dumps(
      [CLASSIFIER_VERSION, "fp", "genre", 16000, dataclasses.asdict(cfg)], sort_keys=True
    ).encode()
  ).hexdigest()[:16]
  assert corpus_key("fp", "genre", 16000, cfg) == old
  hard = corpus_key("fp", "genre", 16000, scores.hardened_config(cfg), Augmentation())
  assert hard != old
  assert hard != corpus_key("fp", "genre", 16000, scores.hardened_config(cfg), Augmentation(p=0.3))
  assert scores.hardened_config(cfg).seed == cfg.seed + 1


# ------------------------------------------------------------------------------------------------
# End to end on the tiny built-in corpus.


def _tiny_reference():
  """The tiny built-in corpus and a stand-in for today's reference: its splits and labels only
  (the hardened judge reuses them; no reference classifier is trained here)."""
  _, data = inputs.load_data(preset("tiny"), log=lambda _: None)
  usable = data.usable
  held = np.arange(usable.size) % 4 == 3
  train_idx, test_idx = usable[~held], usable[held]
  k = len(data.styles)
  ref = scores.Reference(
    types.SimpleNamespace(classes=data.styles),
    data.styles,
    train_idx,
    test_idx,
    np.zeros((train_idx.size, 1)),
    np.zeros((test_idx.size, 1)),
    np.eye(k)[data.labels[test_idx]],  # today's judge "predicts" every held-out clip right
    data.labels[test_idx],
  )
  return data, ref


def test_hardened_judge_on_a_tiny_corpus_is_cached_apart_from_the_reference(monkeypatch):
  data, ref = _tiny_reference()
  calls = []

  def untrained(audio_fn, labels, train_idx, test_idx, classes, sample_rate, cfg, **kw):
    """The classifier as initialised (training is what takes a CPU long, not what is tested)."""
    calls.append((cfg, kw["augmentation"], train_idx, test_idx))
    abstract = nnx.eval_shape(lambda: StyleNet(cfg, len(classes), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(cfg.seed)
    params = jax.tree.map(
      lambda a: (0.2 * rng.standard_normal(a.shape)).astype(a.dtype),
      nnx.to_pure_dict(nnx.state(abstract, nnx.Param)),
    )
    clf = Classifier(cfg, classes, sample_rate, params, None, {"seconds": 0.0})
    probs, _ = clf.predict(audio_fn(test_idx))
    clf.held_out_accuracy = float(np.mean(np.argmax(probs, axis=1) == labels[test_idx]))
    clf.info["augmentation"] = dataclasses.asdict(kw["augmentation"])
    return clf

  def folders():
    """Classifier folders in the corpus cache (other tests may have cached some already)."""
    root = data.cache.path
    return {
      d: set(os.listdir(os.path.join(root, d))) if os.path.isdir(os.path.join(root, d)) else set()
      for d in (scores.CLASSIFIER_DIR, scores.HARDENED_DIR)
    }

  monkeypatch.setattr(scores, "train_classifier", untrained)
  cfg = ClassifierConfig(steps=4, width=4, batch_size=12)
  before = folders()
  hard = scores.hardened_reference(data, ref, cfg=cfg, log=lambda _: None)
  after = folders()
  (got_cfg, got_aug, got_train, got_test), *more = calls
  assert not more and got_cfg == dataclasses.replace(cfg, seed=1) and got_aug == Augmentation()
  np.testing.assert_array_equal(got_train, ref.train_idx)  # the reference's splits
  np.testing.assert_array_equal(got_test, ref.test_idx)
  assert hard.classifier.cfg.seed == 1 and hard.classifier.info["augmentation"]["p"] == 0.5
  assert hard.limits.shape == (len(ref.styles),) and hard.temperature > 0
  assert after[scores.CLASSIFIER_DIR] == before[scores.CLASSIFIER_DIR]  # today's: untouched
  assert len(after[scores.HARDENED_DIR] - before[scores.HARDENED_DIR]) == 1
  again = scores.hardened_reference(
    data, ref, cfg=cfg, log=lambda msg: pytest.fail(f"retrained: {msg}")
  )
  np.testing.assert_array_equal(again.test_probs, hard.test_probs)
  real = data.cache.gather(ref.test_idx)
  got = scores.score_hardened_real(ref, hard, real)
  pred = np.argmax(hard.test_probs, axis=1)
  assert got["clips"] == ref.test_idx.size
  assert got["agreement"] == pytest.approx(np.mean(pred == ref.test_labels))
  assert got["style_accuracy"] == got["agreement"]  # today's stand-in is always right
  noise = scores.noise_clips(real.shape[0], real.shape[1:])
  far = scores.score_hardened(ref, hard, noise, ref.test_labels, base_probs=ref.test_probs)
  assert far["accepted_style_accuracy"] == 0.0  # noise is unlike any real clip
  assert far["near_real_rate"] == 0.0
  report = {
    "run": "r",
    "step": 0,
    "n": 2,
    "seed": 0,
    "classifier": {"kind": "k", "held_out_accuracy": 1.0},
    "generated": {"fd": 1.0, "nn_distance": 1.0},
    "real_held_out": {"fd": 1.0, "nn_distance": 1.0},
    "noise": {"fd": 1.0, "nn_distance": 1.0},
    "hardened": {
      "classifier": scores.hardened_summary(hard, ref),
      "generated": far,
      "real_held_out": got,
      "noise": far,
    },
    "upsampling_artefacts": {"periods": [256], "hz": [62.5], "generated": [4.0], "noise": [0.0]},
    "spectrum": {"n_fft": 512, "generated": 12.5, "real_held_out": 0.75, "noise": 30.0},
  }
  md = markdown(scores.json_safe(report))
  assert "| spectral shape distance (dB) | 12.5 | 0.75 | 30 |" in md
  assert "| Accepted style accuracy (right style and near a real clip) | higher | 0 |" in md
  assert "| 256 | 62.5 | 4 | - | 0 |" in md
