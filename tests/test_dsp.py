"""SpecGAN's spectral front end: STFT round trip, moments, normalisation and Griffin-Lim."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegan import dsp

SR = 16000
N = 16384


def _test_signal() -> np.ndarray:
  """A chirp plus decaying sines, [1, 16384]: structured enough that phase retrieval is meaningful."""
  t = np.arange(N) / SR
  chirp = 0.5 * np.sin(2 * np.pi * (200 * t + 0.5 * 3000 * t**2 / t[-1]))
  sines = sum(0.3 * np.exp(-3 * t) * np.sin(2 * np.pi * f * t) for f in (440, 1250, 3300))
  return (chirp + sines).astype(np.float32)[None]


def _spectral_convergence(target_mag: np.ndarray, audio: jax.Array) -> float:
  """||S_target| - |S(audio)|||_F / ||S_target||_F over SpecGAN's 128 bins."""
  mag = np.abs(np.asarray(dsp.stft(audio)))[..., :128]
  return float(np.linalg.norm(target_mag - mag) / np.linalg.norm(target_mag))


def test_shapes_and_stft_round_trip():
  x = np.random.default_rng(0).standard_normal((3, N)).astype(np.float32)
  spec = dsp.stft(jnp.asarray(x))
  assert spec.shape == (3, 128, 129) and jnp.iscomplexobj(spec)
  assert dsp.log_magnitude(jnp.asarray(x)).shape == (3, 128, 128)
  y = np.asarray(dsp.istft(spec))
  assert y.shape == x.shape
  # Only the first samples (under the first window's rising edge alone) are ill-conditioned.
  assert np.abs(y - x)[:, 256:-256].max() < 1e-4
  assert dsp.istft(spec, length=N - 100).shape == (3, N - 100)


def test_log_magnitude_of_a_tone_peaks_at_its_bin():
  t = np.arange(N) / SR
  tone = np.sin(2 * np.pi * 2000 * t).astype(np.float32)[None]  # 2000 Hz / 62.5 Hz = bin 32
  lm = np.asarray(dsp.log_magnitude(jnp.asarray(tone)))
  assert np.all(np.argmax(lm[0, 1:-1], axis=-1) == 32)


def test_griffin_lim_recovers_magnitude():
  target = np.abs(np.asarray(dsp.stft(jnp.asarray(_test_signal()))))[..., :128]
  sc = {
    n: _spectral_convergence(target, dsp.griffin_lim(jnp.asarray(target), n_iter=n))
    for n in (2, 32, 64)
  }
  assert sc[64] < 0.06 and sc[32] < 0.1, sc
  assert sc[2] > sc[32] > sc[64], sc
  # The momentum is what makes it "fast": classic Griffin-Lim is clearly worse at 32 iterations.
  classic = dsp.griffin_lim(jnp.asarray(target), n_iter=32, momentum=0.0)
  assert _spectral_convergence(target, classic) > 1.5 * sc[32]


def test_griffin_lim_compiles_once_per_static_config():
  mag = jnp.abs(dsp.stft(jnp.asarray(_test_signal())))[..., :128]
  kw = dict(n_iter=3, n_fft=256, hop=128, length=N - 64)
  before = dsp.griffin_lim._cache_size()
  # New values of the traced args (magnitude, seed, momentum) reuse the compiled loop. (jit keys
  # its cache on which kwargs are passed, so both calls pass the same ones.)
  a = dsp.griffin_lim(mag, seed=0, momentum=0.99, **kw)
  b = dsp.griffin_lim(mag * 2.0, seed=1, momentum=0.5, **kw)
  assert dsp.griffin_lim._cache_size() == before + 1
  assert a.shape == b.shape == (1, N - 64)
  assert np.all(np.isfinite(np.asarray(b)))
  # Same seed -> same initial phase -> same output.
  np.testing.assert_array_equal(
    np.asarray(a), np.asarray(dsp.griffin_lim(mag, seed=0, momentum=0.99, **kw))
  )


def test_moments_match_numpy_and_chunked():
  x = np.random.default_rng(1).normal(3.0, 2.0, (10, 16, 128)).astype(np.float32)
  x[..., 5] = -4.0  # constant bin
  mean, std = dsp.moments(x)
  flat = x.reshape(-1, 128).astype(np.float64)
  varying = np.arange(128) != 5
  np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
  np.testing.assert_allclose(std[varying], flat.std(0)[varying], rtol=1e-12)
  assert std[5] == 1e-6  # floored, not 0
  mean_c, std_c = dsp.moments_from_batches(x[i : i + 3] for i in range(0, 10, 3))
  np.testing.assert_allclose(mean_c, mean, rtol=1e-10)
  np.testing.assert_allclose(std_c, std, rtol=1e-6)
  with pytest.raises(ValueError):
    dsp.moments_from_batches([])
  d = json.loads(json.dumps(dsp.moments_to_dict(mean, std)))
  np.testing.assert_allclose(dsp.moments_from_dict(d)[0], mean, rtol=1e-6)


def test_normalize_round_trip_and_clip_range():
  rng = np.random.default_rng(2)
  mean, std = rng.normal(size=128), rng.uniform(0.5, 2.0, 128)
  z = rng.uniform(-2.9, 2.9, (4, 8, 128))  # inside 3 std
  x = jnp.asarray(mean + z * std, jnp.float32)
  xn = dsp.normalize(x, mean, std)
  np.testing.assert_allclose(np.asarray(xn), z / 3.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(dsp.denormalize(xn, mean, std)), np.asarray(x), atol=1e-4)
  far = jnp.asarray(mean + rng.normal(0, 20, (4, 8, 128)) * std, jnp.float32)
  fn = np.asarray(dsp.normalize(far, mean, std))
  assert fn.min() == -1.0 and fn.max() == 1.0


def test_spec_to_audio_inverts_a_normalised_image():
  x = jnp.asarray(_test_signal())
  lm = dsp.log_magnitude(x)
  mean, std = dsp.moments(np.asarray(lm))
  # A wide clip keeps this image unclipped, so only Griffin-Lim's error remains.
  audio = dsp.spec_to_audio(
    dsp.normalize(lm, mean, std, clip=10.0), mean, std, n_iter=32, clip=10.0
  )
  assert audio.shape == (1, N)
  target = np.abs(np.asarray(dsp.stft(x)))[..., :128]
  assert _spectral_convergence(target, audio) < 0.1


# ---------------------------------------------------------------------------------------------
# One STFT for every caller: each of them gives, bit for bit, what its own hand-written STFT gave.
# The references below are those STFTs as they were, copied verbatim.


def _old_specgan_stft(audio, n_fft=256, hop=128):
  n_frames = audio.shape[-1] // hop
  x = jnp.pad(audio, ((0, 0), (0, max(n_fft - hop, 0))))
  idx = dsp.frame_indices(n_frames, n_fft, hop)
  frames = x[:, idx] * jnp.asarray(dsp.hann(n_fft), x.dtype)
  return jnp.fft.rfft(frames, axis=-1)


def _old_critic_stft_magnitude(x, n_fft, hop):
  pad = n_fft // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
  index = dsp.frame_indices(1 + x.shape[1] // hop, n_fft, hop)
  frames = xp[:, index] * dsp.hann(n_fft).astype(np.float32)
  spec = jnp.fft.rfft(frames, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  return jnp.sqrt(jnp.maximum(power, 1e-7))


def _old_classifier_log_mel(audio, mel, n_fft, hop):
  x = jnp.mean(audio, axis=-1)
  x = jnp.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  idx = dsp.frame_indices(1 + (x.shape[1] - n_fft) // hop, n_fft, hop)
  frames = x[:, idx] * jnp.hanning(n_fft).astype(x.dtype)
  power = jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2
  return jnp.log(1e-5 + power @ mel)


def _old_preview_log_spectrogram(audio, n_fft=512, hop=128):
  audio = np.asarray(audio, np.float32)
  pad = np.pad(audio, (n_fft // 2, n_fft // 2))
  n_frames = 1 + (len(pad) - n_fft) // hop
  idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
  frames = pad[idx] * np.hanning(n_fft).astype(np.float32)
  mag = np.abs(np.fft.rfft(frames, axis=-1)).T
  return 20.0 * np.log10(np.maximum(mag, 1e-5))


def _noise(*shape: int, seed: int = 3) -> np.ndarray:
  return (0.5 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("length", [N, 5000])
def test_specgan_stft_and_log_magnitude_are_unchanged(length):
  x = jnp.asarray(_noise(3, length))
  np.testing.assert_array_equal(np.asarray(dsp.stft(x)), np.asarray(_old_specgan_stft(x)))
  old = jnp.log(jnp.abs(_old_specgan_stft(x, 512, 128))[..., :256] + 1e-6)
  np.testing.assert_array_equal(np.asarray(dsp.log_magnitude(x, 512, 128)), np.asarray(old))
  jitted = jax.jit(dsp.log_magnitude, static_argnums=(1, 2))
  np.testing.assert_array_equal(
    np.asarray(jitted(x, 256, 128)),
    np.asarray(jax.jit(lambda a: jnp.log(jnp.abs(_old_specgan_stft(a))[..., :128] + 1e-6))(x)),
  )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("n_fft, hop", [(512, 128), (1024, 256), (256, 64)])
def test_critic_stft_magnitude_and_its_gradient_are_unchanged(n_fft, hop, dtype):
  x = jnp.asarray(_noise(2, 4000), dtype)
  np.testing.assert_array_equal(
    np.asarray(dsp.stft_magnitude(x, n_fft, hop)),
    np.asarray(_old_critic_stft_magnitude(x, n_fft, hop)),
  )

  def grad(fn):
    return jax.jit(jax.grad(lambda a: jnp.sum(jnp.log(fn(a, n_fft, hop)) ** 2)))(x)

  got, want = grad(dsp.stft_magnitude), grad(_old_critic_stft_magnitude)
  assert got.dtype == dtype
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_classifier_log_mel_is_unchanged():
  audio = jnp.asarray(_noise(4, 8000, 2))
  mel = jnp.asarray(dsp.mel_filterbank(SR, 512, 64))
  assert mel.shape == (257, 64) and mel.dtype == jnp.float32
  want = jax.jit(_old_classifier_log_mel, static_argnums=(2, 3))(audio, mel, 512, 256)
  got = jax.jit(lambda a, m: dsp.log_mel(jnp.mean(a, axis=-1), m, 512, 256))(audio, mel)
  assert got.shape == (4, 1 + 8000 // 256, 64)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_numpy_stft_is_the_previews_old_spectrogram():
  from wavegan.synthesis.previews import log_spectrogram

  for length in (N, 3001):
    x = _noise(length, seed=length)
    np.testing.assert_array_equal(log_spectrogram(x), _old_preview_log_spectrogram(x))
  spec = dsp.stft(_noise(2, 3001), 512, 128, center=True, pad_mode="constant", xp=np)
  assert isinstance(spec, np.ndarray) and spec.shape == (2, 1 + 3001 // 128, 257)


def test_centred_stft_matches_librosa():
  import librosa

  x = _noise(2, 4000).astype(np.float64)
  for pad_mode in ("reflect", "constant"):
    got = dsp.stft(x, 512, 128, center=True, pad_mode=pad_mode, xp=np)  # [B, F, K]
    want = librosa.stft(x, n_fft=512, hop_length=128, center=True, pad_mode=pad_mode)  # [B, K, F]
    np.testing.assert_allclose(got, want.transpose(0, 2, 1), atol=1e-9)
