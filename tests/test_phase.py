"""The phase-aware spectral kinds (complex STFT planes; log magnitude + instantaneous frequency)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from data_pipelines import corpus
from wavegan import dsp
from wavegan.config import ModelConfig
from wavegan.models import kinds, phase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(ROOT, "..", "shared", "corpora", "fsdd")
KINDS = ("complex", "ifspec")
T = 16384
# The samples `dsp.overlap_envelope` fades rather than inverts at n_fft 256, hop 128: those of the
# last hop where the squared window is under the minimum before it (0.5).
FADED = 81


def builtin_clips(n: int = 6) -> np.ndarray:
  """One clip of each built-in style (16 kHz, 16384 samples): [n, T, 1]."""
  clips = [
    corpus.synthesize(s, corpus.clip_rng(0, s, 0), 16000, T / 16000) for s in corpus.STYLES[:n]
  ]
  return np.stack(clips)[..., None]


def fsdd_clips(n: int = 6) -> np.ndarray:
  """The first `n` spoken digits of the manifest, zero-padded to 16384 samples: [n, T, 1]."""
  if not os.path.isdir(FSDD):
    pytest.skip("the spoken-digit corpus is not beside the project")
  with open(os.path.join(FSDD, "manifest.csv")) as f:
    paths = [line.split(",")[0] for line in f.read().splitlines()[1 : n + 1]]
  out = np.zeros((n, T, 1), np.float32)
  for i, path in enumerate(paths):
    audio, _ = sf.read(os.path.join(FSDD, path), dtype="float32")
    out[i, : min(len(audio), T), 0] = audio[:T]
  return out


@pytest.mark.parametrize("hop,n_fft", [(128, 256), (64, 256), (128, 512)])
def test_packed_stft_inverts_exactly_bar_the_faded_end(hop, n_fft):
  rng = np.random.default_rng(0)  # |x| >= 0.1, so ratios below are well defined
  x = (rng.choice([-1, 1], (2, T)) * rng.uniform(0.1, 1, (2, T))).astype(np.float32)
  spec = dsp.packed_stft(jnp.asarray(x), n_fft, hop)
  assert spec.shape == (2, T // hop, n_fft // 2)
  back = np.asarray(dsp.packed_istft(spec, n_fft, hop))
  end = T - n_fft // 2  # from here on the last frame's falling half alone may cover a sample
  np.testing.assert_allclose(back[:, :end], x[:, :end], atol=1e-5)
  # There the envelope is floored: a sample fades towards 0 (x times env / floor) rather than
  # blowing up, and is exact where the envelope is above the floor.
  env = dsp.overlap_envelope(T // hop, n_fft, hop, T)
  assert np.all(np.abs(back[:, end:]) <= np.abs(x[:, end:]) + 1e-5)
  assert env.min() == env[:end].min() > 0
  ratio = back[:, end:] / x[:, end:]
  assert np.all((ratio > 0) & (ratio < 1 + 1e-3))
  assert np.mean(np.abs(ratio - 1) < 1e-3) > 0.25  # the end's first samples are still exact


def test_the_packed_dc_bin_holds_dc_and_nyquist():
  n = np.arange(T)
  x = (0.25 + 0.5 * (-1.0) ** n)[None].astype(np.float32)  # DC plus a Nyquist tone
  spec = np.asarray(dsp.packed_stft(jnp.asarray(x)))
  full = np.asarray(dsp.stft(jnp.asarray(x), center=True))[:, :-1]
  np.testing.assert_allclose(spec[..., 0].real, full[..., 0].real, rtol=1e-5)
  np.testing.assert_allclose(spec[..., 0].imag, full[..., 128].real, rtol=1e-5)
  # The Hann window's main lobe spreads them to bins 1 and 127 only.
  assert np.abs(spec[..., 2:127]).max() < 1e-3 * np.abs(spec[..., 0]).max()


def test_instantaneous_frequency_sums_back_to_the_phase():
  phase_in = np.random.default_rng(1).uniform(-np.pi, np.pi, (3, 128, 16)).astype(np.float32)
  freq = dsp.instantaneous_frequency(jnp.asarray(phase_in))
  assert float(jnp.min(freq)) >= -1 and float(jnp.max(freq)) < 1
  back = np.asarray(dsp.phase_from_frequency(freq))
  np.testing.assert_allclose(np.angle(np.exp(1j * (back - phase_in))), 0, atol=1e-4)
  # A steady tone's frequency is constant after the first frame.
  ramp = (0.3 * np.pi * np.arange(128))[None, :, None]
  tone = np.asarray(dsp.instantaneous_frequency(jnp.asarray(dsp.wrap_phase(ramp))))
  np.testing.assert_allclose(tone[:, 1:], 0.3, atol=1e-5)


@pytest.mark.parametrize("clips", [builtin_clips, fsdd_clips], ids=["builtin", "fsdd"])
@pytest.mark.parametrize("name", KINDS)
def test_waveform_to_images_to_waveform_within_1e4(name, clips):
  audio = clips()
  model = ModelConfig(kind=name)
  kind = kinds.kind_of(model)
  stats = kinds.arrays(kind.measure([audio], model))
  images = kind.critic_input(jnp.asarray(audio), stats, model)
  assert images.shape == (len(audio), 128, 128, 2)
  # Standardised per plane and bin, unclipped: these clips' own statistics give mean 0, std 1.
  assert abs(float(jnp.mean(images))) < 1e-3 and abs(float(jnp.std(images)) - 1) < 1e-3
  back = np.asarray(jax.jit(kind.to_audio, static_argnums=2)(images, stats, model))
  np.testing.assert_allclose(back[:, : T - FADED], audio[:, : T - FADED], atol=1e-4)


@pytest.mark.parametrize("slice_len", (16384, 32768, 65536))
@pytest.mark.parametrize("channels", (1, 2))
@pytest.mark.parametrize("name", KINDS)
def test_shapes_of_every_slice_length_and_channel_count(name, slice_len, channels):
  model = ModelConfig(kind=name, slice_len=slice_len, channels=channels, num_styles=3, dim=4)
  kind = kinds.kind_of(model)
  frames = slice_len // 128
  stats = {"mean": jnp.zeros(256), "std": jnp.ones(256)}
  style = jnp.eye(3)[:2]

  def run(z):
    g = kind.generator(model, rngs=nnx.Rngs(0))
    d = kind.critic(model, rngs=nnx.Rngs(1))
    images = g(z, style)
    audio = kind.to_audio(images, stats, model)
    return images, audio, kind.critic_input(audio, stats, model), d(images, style)

  images, audio, x, logits = jax.eval_shape(run, jnp.zeros((2, model.latent_dim)))
  assert images.shape == x.shape == (2, frames, 128, 2 * channels)
  assert audio.shape == (2, slice_len, channels) and logits.shape == (2,)


@pytest.mark.parametrize("name", KINDS)
def test_generated_images_become_finite_bounded_audio(name):
  model = ModelConfig(kind=name)
  kind = kinds.kind_of(model)
  stats = {"mean": jnp.zeros(256), "std": jnp.ones(256)}
  wild = jnp.asarray([3e38, -3e38, 0.0, 1e30]).reshape(1, 1, 2, 2)
  images = jnp.tile(wild, (2, 128, 64, 1))  # absurd planes: overflow bait
  audio = kind.to_audio(images, stats, model)
  assert bool(jnp.all(jnp.isfinite(audio))) and float(jnp.max(jnp.abs(audio))) <= 1.0


def test_the_planes_module_is_what_the_registry_uses():
  for name in KINDS:
    kind = kinds.KINDS[name]
    assert kind.generator is phase.PlanesGenerator and kind.critic is phase.PlanesDiscriminator
    assert kind.statistics_file(ModelConfig(kind=name)) == f"{name}-256-128"
