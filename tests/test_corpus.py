"""Tests for the built-in procedural corpus (data_pipelines/corpus.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import corpus
from data_pipelines.corpus import STYLES, builtin_corpus, clip_rng, make_corpus, synthesize


def _band_features(x: np.ndarray, sample_rate: int, num_bands: int = 24) -> np.ndarray:
  """Log power in log-spaced bands, relative to the loudest band (level-invariant), [num_bands]."""
  power = np.abs(np.fft.rfft(x)) ** 2  # [F]
  freqs = np.fft.rfftfreq(x.shape[0], 1.0 / sample_rate)
  edges = np.geomspace(40.0, sample_rate / 2, num_bands + 1)
  band = np.clip(np.searchsorted(edges, freqs) - 1, 0, num_bands - 1)  # [F]
  mean_power = np.bincount(band, weights=power, minlength=num_bands) / np.maximum(
    np.bincount(band, minlength=num_bands), 1
  )
  return np.log10(mean_power / mean_power.max() + 1e-5)


def _spectral_centroid(x: np.ndarray, sample_rate: int) -> float:
  power = np.abs(np.fft.rfft(x)) ** 2
  return float((power * np.fft.rfftfreq(x.shape[0], 1.0 / sample_rate)).sum() / power.sum())


@pytest.mark.parametrize("sample_rate,duration", [(8000, 1.0), (16000, 1.0), (44100, 0.5)])
def test_every_style_is_valid_audio_at_any_rate(sample_rate: int, duration: float):
  for style in STYLES:
    for i in range(2):
      x = synthesize(style, clip_rng(0, style, i), sample_rate, duration)
      assert x.dtype == np.float32
      assert x.shape == (round(sample_rate * duration),)
      assert np.isfinite(x).all()
      peak = np.max(np.abs(x))
      assert 0.3 - 1e-6 <= peak <= 0.99 + 1e-6, (style, peak)
      onset = int(np.argmax(np.abs(x) > 0))
      assert onset <= 0.005 * sample_rate + 1, (style, onset)
      # Decays mostly finish inside the clip: the last 10% is far quieter than the peak.
      assert np.max(np.abs(x[-len(x) // 10 :])) < 0.1 * peak, style


def test_synthesize_is_deterministic_and_seed_dependent():
  for style in STYLES:
    a = synthesize(style, np.random.default_rng(7), 8000)
    b = synthesize(style, np.random.default_rng(7), 8000)
    c = synthesize(style, np.random.default_rng(8), 8000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clips_vary_within_a_style():
  clips = np.stack([synthesize("kick", clip_rng(0, "kick", i), 8000) for i in range(4)])
  peaks = np.max(np.abs(clips), axis=1)
  assert np.ptp(peaks) > 0.01  # random level
  assert len({c.tobytes() for c in clips}) == 4


def test_styles_are_distinguishable():
  sample_rate, n_train, n_test = 16000, 6, 6
  feats = {}
  centroids = {}
  for style in STYLES:
    clips = [synthesize(style, clip_rng(0, style, i), sample_rate) for i in range(n_train + n_test)]
    feats[style] = np.stack([_band_features(c, sample_rate) for c in clips])  # [n, bands]
    centroids[style] = np.mean([_spectral_centroid(c, sample_rate) for c in clips])
  assert centroids["kick"] < centroids["tom"] < centroids["snare"] < centroids["hat"]
  assert centroids["kick"] * 10 < centroids["hat"]

  # Nearest-centroid classifier: fit on the first clips of each style, test on held-out ones.
  means = np.stack([feats[s][:n_train].mean(0) for s in STYLES])  # [S, bands]
  correct = 0
  for label, style in enumerate(STYLES):
    test = feats[style][n_train:]  # [n_test, bands]
    dist = ((test[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # [n_test, S]
    correct += int((dist.argmin(1) == label).sum())
  accuracy = correct / (n_test * len(STYLES))
  assert accuracy > 0.9, accuracy


def test_frequencies_stay_below_nyquist_at_8k():
  # Tonal styles must not fold energy back: almost nothing above 0.45 * sr (their margin).
  sample_rate = 8000
  for style in ("kick", "tom", "pluck"):
    x = synthesize(style, clip_rng(0, style, 0), sample_rate).astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / sample_rate)
    assert power[freqs > 0.46 * sample_rate].sum() < 1e-3 * power.sum(), style


def test_unknown_style_raises_with_valid_names(tmp_path):
  with pytest.raises(ValueError, match="kick"):
    synthesize("cymbal", np.random.default_rng(0), 16000)
  with pytest.raises(ValueError, match="valid styles"):
    make_corpus(str(tmp_path), per_class=1, styles=("kick", "gong"))
  assert not os.listdir(tmp_path)  # validated before writing anything


def test_bad_rate_or_count_raises(tmp_path):
  with pytest.raises(ValueError):
    synthesize("kick", np.random.default_rng(0), 4000)
  with pytest.raises(ValueError):
    make_corpus(str(tmp_path), per_class=0)


def test_make_corpus_layout_and_format(tmp_path):
  out = tmp_path / "corpus"
  summary = make_corpus(str(out), per_class=2, sample_rate=8000, seed=3, duration=0.25)
  assert sorted(os.listdir(out)) == sorted(STYLES)
  for style in STYLES:
    assert sorted(os.listdir(out / style)) == [f"{style}_0000.wav", f"{style}_0001.wav"]
  assert summary["counts"] == {s: 2 for s in STYLES}
  assert summary["sample_rate"] == 8000
  assert len(summary["files"]) == 2 * len(STYLES)
  for path in summary["files"]:
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (8000, 1, 2000)
    assert info.subtype == "PCM_16"
  x, sr = sf.read(summary["files"][0], dtype="float32")
  expected = synthesize(STYLES[0], clip_rng(3, STYLES[0], 0), 8000, 0.25)
  np.testing.assert_allclose(x, expected, atol=1.0 / 32768 + 1e-6)  # only 16-bit quantisation


def _read_tree(root) -> dict[str, bytes]:
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_make_corpus_is_byte_identical_and_stable_under_growth(tmp_path):
  make_corpus(str(tmp_path / "a"), per_class=2, sample_rate=8000, duration=0.25)
  make_corpus(str(tmp_path / "b"), per_class=2, sample_rate=8000, duration=0.25)
  make_corpus(str(tmp_path / "c"), per_class=3, sample_rate=8000, duration=0.25)
  make_corpus(str(tmp_path / "d"), per_class=2, sample_rate=8000, duration=0.25, styles=("hat",))
  a, b, c, d = (_read_tree(tmp_path / k) for k in "abcd")
  assert a == b
  # More clips per style leaves the existing ones untouched.
  assert {k: v for k, v in c.items() if not k.endswith("_0002.wav")} == a
  assert d == {k: v for k, v in a.items() if k.startswith("hat")}  # subset: same clips
  make_corpus(str(tmp_path / "e"), per_class=2, sample_rate=8000, duration=0.25, seed=1)
  assert _read_tree(tmp_path / "e") != a


def test_builtin_corpus_caches_atomically(tmp_path, monkeypatch):
  monkeypatch.setenv("WAVEGAN_CACHE", str(tmp_path))
  # A leftover temp folder from a killed generation must not be mistaken for a corpus.
  (tmp_path / ".builtin-v1-sr8000-n1-s0.tmp-dead").mkdir()
  path = builtin_corpus(per_class=1, sample_rate=8000)
  assert os.path.dirname(path) == str(tmp_path)
  assert os.path.basename(path) == f"builtin-v{corpus.CORPUS_VERSION}-sr8000-n1-s0"
  assert sorted(os.listdir(path)) == sorted(STYLES)
  before = _read_tree(path)
  mtime = os.path.getmtime(os.path.join(path, "kick", "kick_0000.wav"))

  def fail(*args, **kwargs):
    raise AssertionError("must not regenerate an existing corpus")

  monkeypatch.setattr(corpus, "make_corpus", fail)
  assert builtin_corpus(per_class=1, sample_rate=8000) == path
  assert _read_tree(path) == before
  assert os.path.getmtime(os.path.join(path, "kick", "kick_0000.wav")) == mtime


def test_builtin_corpus_failure_leaves_nothing(tmp_path, monkeypatch):
  def crash(out_dir, **kwargs):
    os.makedirs(os.path.join(out_dir, "kick"))
    raise KeyboardInterrupt  # e.g. Ctrl-C half way through

  monkeypatch.setattr(corpus, "make_corpus", crash)
  with pytest.raises(KeyboardInterrupt):
    builtin_corpus(str(tmp_path), per_class=1, sample_rate=8000)
  assert os.listdir(tmp_path) == []


def test_importing_data_pipelines_does_not_import_jax():
  code = "import sys, data_pipelines; assert 'jax' not in sys.modules, 'jax imported'"
  cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
