"""Per-clip attributes from audio: YIN pitch and spectral-centroid brightness (data_pipelines/features.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import features

SR = 16000
T = 16384
FREQS = (55.0, 110.0, 220.0, 440.0, 880.0)


def _t(length: int = T, sr: int = SR) -> np.ndarray:
  return np.arange(length) / sr  # [T] seconds


def _harmonic(
  f0: float, amps, decay: float | None = None, length: int = T, sr: int = SR
) -> np.ndarray:
  """Partials k * f0 with amplitudes `amps` (and arbitrary phases), optionally decaying; [T]."""
  t = _t(length, sr)
  x = sum(a * np.sin(2 * np.pi * k * f0 * t + 0.7 * k) for k, a in enumerate(amps, 1))
  if decay is not None:
    x = x * np.exp(-t / decay)
  return 0.9 * x / np.abs(x).max()


def _glide(f_start: float, f_end: float, decay: float) -> np.ndarray:
  """A sine gliding exponentially from f_start to f_end over the clip, decaying; [T]."""
  t = _t()
  freq = f_start * (f_end / f_start) ** (t / t[-1])  # instantaneous frequency [T]
  return 0.9 * np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / decay)


def _lowpass(x: np.ndarray, cutoff: float, sr: int = SR) -> np.ndarray:
  """Brick-wall low-pass of x [..., T] in the frequency domain."""
  spec = np.fft.rfft(x, axis=-1)
  spec[..., np.fft.rfftfreq(x.shape[-1], 1 / sr) > cutoff] = 0
  return np.fft.irfft(spec, x.shape[-1], axis=-1)


def _clips(*signals: np.ndarray) -> np.ndarray:
  """Mono signals [T] each -> float32 [N, T, 1]."""
  return np.stack(signals).astype(np.float32)[:, :, None]


@pytest.mark.parametrize("f0", FREQS)
def test_pitch_of_sines_and_harmonic_tones(f0):
  clips = _clips(
    0.5 * np.sin(2 * np.pi * f0 * _t()),
    _harmonic(f0, [1.0, 0.5, 0.3, 0.2]),  # fundamental strongest
    _harmonic(f0, [0.5, 1.0, 0.7, 0.4]),  # second partial strongest
    _harmonic(f0, [0.6, 0.4, 1.0, 0.5, 0.3]),  # third partial strongest
    _harmonic(f0, [1.0, 0.6, 0.4, 0.3], decay=0.08),  # pluck: gone in a fraction of the clip
  )
  p = features.pitch(clips, SR)
  assert p.shape == (5,) and p.dtype == np.float32
  np.testing.assert_allclose(p, f0, rtol=0.02)


def test_pitch_is_read_where_the_clip_is_loud():
  # A pluck starting 0.3 s into the clip, after near-silence: the quiet lead-in is not measured.
  pluck = np.zeros(T)
  pluck[4800:] = _harmonic(147.0, [1.0, 0.5, 0.25], decay=0.1, length=T - 4800)
  pluck[:4800] = 1e-4 * np.sin(2 * np.pi * 1000.0 * _t(4800))  # -80 dB hum at another pitch
  np.testing.assert_allclose(features.pitch(_clips(pluck), SR), 147.0, rtol=0.02)


def test_pitch_of_glides_follows_the_loud_start():
  falling, rising, sustained = features.pitch(
    _clips(_glide(200.0, 100.0, 0.15), _glide(100.0, 200.0, 0.15), _glide(200.0, 100.0, 1e9)), SR
  )
  # Within 20 dB of its loudest (first) frame, the decaying glide spans ~200 -> ~158 Hz, and its
  # energy is in the first tenth of a second, where it is above 180 Hz.
  assert 180.0 < falling < 200.0
  assert 100.0 < rising < 110.0
  # Without the decay every frame counts: the median is near the middle of the glide (141 Hz).
  assert 130.0 < sustained < 155.0


def test_pitch_is_nan_for_noise_and_silence():
  rng = np.random.default_rng(0)
  clips = _clips(
    rng.uniform(-0.9, 0.9, T),
    0.3 * rng.standard_normal(T),
    0.3 * rng.standard_normal(T) * np.exp(-_t() / 0.05),  # a hat: decaying noise
    np.zeros(T),
    np.full(T, 1e-7),
  )  # silence, and -140 dBFS of DC
  assert np.isnan(features.pitch(clips, SR)).all()
  # Brightness is undefined only for the silent ones.
  np.testing.assert_array_equal(
    np.isnan(features.brightness(clips, SR)), [False, False, False, True, True]
  )


def test_non_finite_clips_get_nan_and_leave_the_others_alone():
  tone = _harmonic(220.0, [1.0, 0.5])
  bad_nan, bad_inf = tone.copy(), tone.copy()
  bad_nan[100] = np.nan
  bad_inf[200] = np.inf
  clips = _clips(bad_nan, tone, bad_inf)
  for fn in (features.pitch, features.brightness):
    out = fn(clips, SR)
    assert np.isnan(out[[0, 2]]).all()
    assert out[1] == fn(clips[1:2], SR)[0]


def test_stereo_is_measured_as_its_mono_mix():
  left = _harmonic(110.0, [1.0, 0.5, 0.3], decay=0.2)
  right = _harmonic(330.0, [1.0, 0.2], decay=0.3)
  dual = np.stack([left, left], axis=-1).astype(np.float32)[None]  # [1, T, 2]: same both sides
  wide = np.stack([left, right], axis=-1).astype(np.float32)[None]  # [1, T, 2]
  for fn in (features.pitch, features.brightness):
    np.testing.assert_array_equal(fn(dual, SR), fn(_clips(left), SR))
    np.testing.assert_array_equal(fn(wide, SR), fn(wide.mean(axis=2, keepdims=True), SR))


def test_brightness():
  rng = np.random.default_rng(1)
  white = 0.3 * rng.standard_normal(T)
  dark = _lowpass(white, 1000.0)
  sine = 0.5 * np.sin(2 * np.pi * 1000.0 * _t())
  dull, bright = _harmonic(200.0, [1.0, 0.1]), _harmonic(200.0, [1.0] * 8)
  b = features.brightness(_clips(white, dark, sine, dull, bright), SR)
  assert b.shape == (5,) and b.dtype == np.float32
  # White noise is flat up to 8 kHz (centroid 4 kHz); the low-passed copy is flat up to 1 kHz.
  np.testing.assert_allclose(b[0], 4000.0, rtol=0.05)
  assert b[1] < 1000.0 < b[0]
  np.testing.assert_allclose(b[2], 1000.0, rtol=0.05)
  assert b[3] < b[4]


def test_results_do_not_depend_on_chunk():
  rng = np.random.default_rng(2)
  clips = _clips(
    *[_harmonic(f, [1.0, 0.5, 0.3], decay=0.1) for f in FREQS],
    _glide(200.0, 100.0, 0.15),
    0.3 * rng.standard_normal(T),
    np.zeros(T),
  )
  for fn in (features.pitch, features.brightness):
    whole = fn(clips, SR, chunk=256)
    np.testing.assert_array_equal(fn(clips, SR, chunk=1), whole)
    np.testing.assert_array_equal(fn(clips, SR, chunk=3), whole)


def test_other_sample_rates():
  sr = 44100
  length = 45000  # ~1 s, as a 16384-sample clip is at 16 kHz
  t = _t(length, sr)
  # 10 ms fades: an abrupt start or end is a click, broadband up to 22 kHz here, and the
  # magnitude-weighted centroid counts it (at 16 kHz, in test_brightness, it costs ~1%).
  fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)  # [T]
  tones = [_harmonic(f, [1.0, 0.5, 0.3], decay=0.2, length=length, sr=sr) for f in FREQS]
  clips = _clips(*tones, 0.5 * np.sin(2 * np.pi * 1000.0 * t) * fade)
  np.testing.assert_allclose(features.pitch(clips[:-1], sr), FREQS, rtol=0.02)
  np.testing.assert_allclose(features.brightness(clips[-1:], sr), 1000.0, rtol=0.05)
  # The same sound at 16 kHz measures the same (frames scale with the rate).
  high = _clips(_harmonic(220.0, [1.0, 0.5, 0.3], decay=0.2, length=length, sr=sr) * fade)
  low = _clips(_harmonic(220.0, [1.0, 0.5, 0.3], decay=0.2) * np.minimum(1.0, _t() / 0.01))
  for fn in (features.pitch, features.brightness):
    np.testing.assert_allclose(fn(high, sr), fn(low, SR), rtol=0.02)


def test_compute_dispatches_and_checks():
  clips = _clips(_harmonic(110.0, [1.0, 0.5]), _harmonic(440.0, [1.0, 0.5]))
  assert features.ATTRIBUTES == ("pitch", "brightness")
  np.testing.assert_array_equal(features.compute("pitch", clips, SR), features.pitch(clips, SR))
  np.testing.assert_array_equal(
    features.compute("brightness", clips, SR), features.brightness(clips, SR)
  )
  with pytest.raises(ValueError, match="pitch.*brightness"):
    features.compute("loudness", clips, SR)
  with pytest.raises(ValueError, match=r"\[N, T, C\]"):
    features.pitch(clips[:, :, 0], SR)
  with pytest.raises(ValueError, match="fmin"):
    features.pitch(clips, SR, fmin=500.0, fmax=400.0)
  for fn in (features.pitch, features.brightness):
    empty = fn(np.zeros((0, T, 1), np.float32), SR)
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_pitch_of_pure_sines_within_one_percent():
  freqs = (31.0, 73.0, 261.6, 1234.5, 1990.0)  # off the FFT bins, from fmin to near fmax
  clips = _clips(*[0.5 * np.sin(2 * np.pi * f * _t()) for f in freqs])
  np.testing.assert_allclose(features.pitch(clips, SR), freqs, rtol=0.01)


def _old_brightness(clips: np.ndarray, sample_rate: int) -> np.ndarray:
  """The hand-written STFT centroid that librosa's replaced (reference; 16 kHz sizes)."""
  hop, n_fft = 512, 2048
  x = clips.mean(axis=2, dtype=np.float32)
  count = 1 + -(-x.shape[1] // hop)
  starts = hop * np.arange(count)
  x = np.pad(x, ((0, 0), (n_fft // 2, (count - 1) * hop + n_fft - n_fft // 2 - x.shape[1])))
  frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, starts]
  hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
  mag = np.abs(np.fft.rfft(frames * hann, axis=2))
  freqs = (np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)).astype(np.float32)
  centroid = (mag * freqs).sum(axis=2, dtype=np.float64) / mag.sum(axis=2, dtype=np.float64)
  energy = np.square(mag).sum(axis=2, dtype=np.float64)
  return ((energy * centroid).sum(axis=1) / energy.sum(axis=1)).astype(np.float32)


def test_brightness_of_corpus_clips_is_what_it_was():
  from data_pipelines import corpus

  clips = np.stack(
    [
      corpus.synthesize(s, corpus.clip_rng(0, s, i), SR, T / SR)
      for s in corpus.STYLES
      for i in (0, 1)
    ]
  )[:, :, None]
  # librosa's STFT runs in float64 where ours ran in float32: a few parts in a million.
  np.testing.assert_allclose(features.brightness(clips, SR), _old_brightness(clips, SR), rtol=1e-5)


def test_features_import_no_jax():
  code = (
    "import sys, numpy as np; from data_pipelines import features; "
    "x = np.random.default_rng(0).standard_normal((2, 16384, 1)).astype(np.float32); "
    "features.pitch(x, 16000); features.brightness(x, 16000); "
    "assert 'jax' not in sys.modules, 'jax imported'"
  )
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
