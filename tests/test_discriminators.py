"""Auxiliary discriminators (MSD, MPD, MR-STFT) and their losses: shapes, gradients, equivalences."""

import math

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavegan.models import critics as aux
from wavegan.training import losses

B, WIDTH = 2, 4
NAMES = ("msd", "mpd", "mrstft")


def build(name, channels=1):
  return aux.build_aux_discriminators((name,), channels, WIDTH, rngs=nnx.Rngs(0))[name]


def expected_logit_lens(name, t):
  """Logit count per example for each sub-discriminator at the default settings."""
  if name == "msd":
    return [math.ceil(math.ceil(t / 2**k) / 256) for k in range(3)]
  if name == "mpd":
    return [p * math.ceil(math.ceil(t / p) / 81) for p in aux.DEFAULT_PERIODS]
  return [
    (1 + t // hop) * math.ceil((n_fft // 2 + 1) / 8) for n_fft, hop in aux.DEFAULT_RESOLUTIONS
  ]


def audio(seed, t=16384, channels=1, scale=0.5):
  return scale * jax.random.normal(jax.random.key(seed), (B, t, channels), jnp.float32)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("slice_len", [16384, 32768, 65536])
@pytest.mark.parametrize("channels", [1, 2])
def test_output_shapes(name, slice_len, channels):
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build(name, channels)))  # abstract params
  x = jax.ShapeDtypeStruct((B, slice_len, channels), jnp.float32)
  logits, feats, _ = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
  assert [l.shape for l in logits] == [(B, n) for n in expected_logit_lens(name, slice_len)]
  assert feats and all(f.shape[0] == B and f.dtype == jnp.float32 for f in feats)


@pytest.mark.parametrize("name,channels", [("msd", 2), ("mpd", 1), ("mrstft", 2)])
def test_forward_is_finite_and_generator_gradients_flow(name, channels):
  disc = build(name, channels)
  real, fake = audio(0, channels=channels), audio(1, channels=channels)
  logits, feats, _ = nnx.jit(lambda d, x: d(x))(disc, real)
  assert len(logits) == len(expected_logit_lens(name, 16384))
  assert feats
  for t in logits + feats:
    assert t.shape[0] == B and bool(jnp.all(jnp.isfinite(t)))
  assert all(float(jnp.std(f)) > 0 for f in feats)

  def g_loss(y):
    fake_logits, fake_feats, _ = disc(y)
    return losses.hinge_g_loss(fake_logits) + losses.feature_matching_loss(feats, fake_feats)

  grad = jax.jit(jax.grad(g_loss))(fake)
  assert grad.shape == fake.shape
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0


def test_feature_matching_loss():
  feats = [jax.random.normal(jax.random.key(i), (B, 8, 3)) for i in range(3)]
  assert float(losses.feature_matching_loss(feats, feats)) == 0.0
  other = [f + 0.1 for f in feats]
  np.testing.assert_allclose(float(losses.feature_matching_loss(feats, other)), 0.1, rtol=1e-5)
  # The real features are constants: no gradient reaches them.
  grad = jax.grad(lambda r: losses.feature_matching_loss(r, other))(feats)
  assert all(float(jnp.max(jnp.abs(g))) == 0 for g in grad)


def test_multi_resolution_stft_loss():
  t = jnp.arange(8192) / 16000.0
  tone = (0.5 * jnp.sin(2 * jnp.pi * 440.0 * t))[None, :, None].repeat(B, 0)  # [B, T, 1]
  noise = audio(3, t=8192, scale=0.1)
  loss = jax.jit(losses.multi_resolution_stft_loss)
  assert float(loss(tone, tone)) < 1e-6
  assert float(loss(tone, noise)) > 1.0
  grad = jax.jit(jax.grad(lambda y: losses.multi_resolution_stft_loss(tone, y)))(tone)
  assert bool(jnp.all(jnp.isfinite(grad)))


def test_unpaired_losses_compare_batch_means():
  # Mean feature matching: batches with the same per-position mean match, whatever their rows.
  feats = [jax.random.normal(jax.random.key(i), (B, 8, 3)) for i in range(2)]
  assert float(losses.mean_feature_matching_loss(feats, [f[::-1] for f in feats])) < 1e-6
  assert float(losses.mean_feature_matching_loss(feats, [f + 0.1 for f in feats])) == pytest.approx(
    0.1
  )
  # Mean spectrum: the same clips in another order match; a different spectrum does not, and its
  # gradient reaches the generated audio only.
  t = jnp.arange(8192) / 16000.0
  tones = jnp.stack([jnp.sin(2 * jnp.pi * f * t) for f in (220.0, 440.0, 880.0, 1760.0)])[..., None]
  loss = jax.jit(losses.mean_spectrum_loss)
  assert float(loss(tones, tones[::-1])) < 1e-5
  noise = audio(4, t=8192, scale=0.1)
  assert float(loss(tones, noise)) > 1.0
  g_real, g_fake = jax.jit(jax.grad(losses.mean_spectrum_loss, argnums=(0, 1)))(tones, noise)
  assert bool(jnp.all(jnp.isfinite(g_fake))) and float(jnp.max(jnp.abs(g_fake))) > 0
  assert bool(jnp.all(jnp.isfinite(g_real)))


def test_mean_spectrum_per_style_compares_each_styles_average():
  t = jnp.arange(8192) / 16000.0
  low, high = (jnp.sin(2 * jnp.pi * f * t)[None, :, None] for f in (110.0, 3520.0))
  real = jnp.concatenate([low, high, low, high])  # styles 0, 1, 0, 1
  one_hot = jnp.eye(3)[jnp.array([0, 1, 0, 1])]  # style 2 is absent from the batch
  loss = jax.jit(losses.mean_spectrum_loss, static_argnames="resolutions")
  # The batch's average cannot tell styles apart: each style's average can.
  swapped = jnp.concatenate([high, low, high, low])
  assert float(loss(real, swapped)) < 1e-5
  assert float(loss(real, swapped, groups=one_hot)) > 1.0
  assert float(loss(real, real[jnp.array([2, 3, 0, 1])], groups=one_hot)) < 1e-5
  # One group of every row is the batch's average, to rounding.
  noise = 0.1 * jax.random.normal(jax.random.key(4), (4, 8192, 1))
  ones = jnp.ones((4, 1))
  assert float(loss(real, noise, groups=ones)) == pytest.approx(float(loss(real, noise)), rel=1e-5)
  # By hand, one resolution: the groups' terms (convergence + log L1) averaged over present groups.
  res = ((512, 128),)
  mags = [jnp.mean(aux.stft_magnitude(x[:, :, 0], 512, 128), axis=1) for x in (real, noise)]
  by_hand = 0.0
  for k in (0, 1):
    rows = jnp.array([k, k + 2])
    r, f = mags[0][rows].mean(0), mags[1][rows].mean(0)
    conv = jnp.linalg.norm(r - f) / jnp.linalg.norm(r)
    by_hand += (conv + jnp.mean(jnp.abs(jnp.log(r) - jnp.log(f)))) / 2
  got = float(loss(real, noise, resolutions=res, groups=one_hot))
  assert got == pytest.approx(float(by_hand), rel=1e-4)
  grad = jax.jit(jax.grad(lambda y: losses.mean_spectrum_loss(real, y, groups=one_hot)))(noise)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.max(jnp.abs(grad))) > 0


def test_mean_spectrum_frame_by_frame_sees_the_decay():
  t = jnp.arange(8192) / 16000.0
  tone = jnp.sin(2 * jnp.pi * 440.0 * t)
  decaying = (tone * jnp.exp(-t / 0.05))[None, :, None]
  rising = decaying[:, ::-1]  # the same long-term spectrum, played backwards
  loss = jax.jit(losses.mean_spectrum_loss, static_argnames=("resolutions", "frames"))
  res = ((512, 128),)
  assert float(loss(decaying, rising, resolutions=res)) < 0.05
  assert float(loss(decaying, rising, resolutions=res, frames=True)) > 1.0
  # By hand: the average spectrogram's convergence + log L1.
  mags = [aux.stft_magnitude(x[:, :, 0], 512, 128)[0] for x in (decaying, rising)]
  conv = jnp.linalg.norm(mags[0] - mags[1]) / jnp.linalg.norm(mags[0])
  by_hand = conv + jnp.mean(jnp.abs(jnp.log(mags[0]) - jnp.log(mags[1])))
  got = float(loss(decaying, rising, resolutions=res, frames=True))
  assert got == pytest.approx(float(by_hand), rel=1e-4)


def test_adversarial_losses_sum_over_sub_discriminators():
  ones, zeros = [jnp.ones((B, 5)), jnp.ones((B, 7))], [jnp.zeros((B, 5)), jnp.zeros((B, 7))]
  assert float(losses.hinge_d_loss(ones, [-o for o in ones])) == 0.0
  assert float(losses.hinge_d_loss(zeros, zeros)) == 4.0
  assert float(losses.hinge_g_loss(ones)) == -2.0
  assert float(losses.lsgan_d_loss(ones, zeros)) == 0.0
  assert float(losses.lsgan_g_loss(zeros)) == 1.0


def test_stft_magnitude_peaks_at_the_tone_bin():
  n_fft, hop = 512, 128
  t = jnp.arange(8192)
  tone = jnp.sin(2 * jnp.pi * 32 * t / n_fft)[None]  # exactly bin 32
  mag = aux.stft_magnitude(tone, n_fft, hop)
  assert mag.shape == (1, 1 + 8192 // hop, n_fft // 2 + 1)
  assert bool(jnp.all(jnp.argmax(mag[0, 4:-4], axis=-1) == 32))


def test_spectral_conv_matches_2d_conv():
  conv = aux.SpectralConv(3, 5, (3, 9), 2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 7, 20, 3))
  k1 = conv.conv.conv.kernel[...]  # [kw, kh * C_in, C_out]
  k2 = k1.reshape(9, 3, 3, 5).transpose(1, 0, 2, 3)  # [kh, kw, C_in, C_out]
  want = jax.lax.conv_general_dilated(
    x, k2, (1, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(conv(x), want, atol=1e-5)


@pytest.mark.parametrize("t", [64, 65])
def test_avg_pool_matches_reference(t):
  x = jax.random.normal(jax.random.key(0), (2, t, 3))
  want = flax.linen.avg_pool(x, (4,), strides=(2,), padding="SAME", count_include_pad=False)
  np.testing.assert_allclose(aux.avg_pool(x), want, atol=1e-6)


def test_factory():
  discs = aux.build_aux_discriminators(("msd", "mrstft"), 1, WIDTH, rngs=nnx.Rngs(0))
  assert isinstance(discs["msd"], aux.MultiScaleDiscriminator)
  assert isinstance(discs["mrstft"], aux.MultiResolutionSTFTDiscriminator)
  with pytest.raises(ValueError, match="mpd"):
    aux.build_aux_discriminators(("msd", "melgan"), 1, WIDTH, rngs=nnx.Rngs(0))
