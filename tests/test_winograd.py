"""Winograd's F(4, 4) for the wide layers' correlations: the same function as the direct form,
to float32 rounding, in every derivative the training step takes."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegan.config import ComputeConfig, ConfigError
from wavegan.models import layers
from wavegan.models.layers import (
  WINOGRAD_POINTS,
  conv1d,
  conv_algorithm,
  resolved_algorithm,
  toom_cook,
  winograd_correlate,
  winograd_suits,
)

# Relative error of the Winograd form against the direct one in float32 (measured: 1-3e-6 on the
# paper model's layers; the direct form itself differs from float64 by ~3e-7).
RTOL = 2e-5


def _direct(x, w, pad_l, pad_r):
  return jax.lax.conv_general_dilated(
    x, w, (1,), [(pad_l, pad_r)], dimension_numbers=("NWC", "WIO", "NWC")
  )


def _rel_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize(
  "m,r,points",
  [(4, 4, WINOGRAD_POINTS), (2, 3, (0, 1, -1)), (3, 3, (0, 1, -1, Fraction(1, 2)))],
)
def test_toom_cook_transforms_compute_the_correlation(m, r, points):
  at, g, bt = toom_cook(m, r, points)
  rng = np.random.default_rng(0)
  d, k = rng.standard_normal((100, m + r - 1)), rng.standard_normal((100, r))
  want = np.stack([np.sum(d[:, i : i + r] * k, axis=1) for i in range(m)], axis=1)
  got = ((d @ bt.T) * (k @ g.T)) @ at.T
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_toom_cook_refuses_too_few_or_repeated_points():
  with pytest.raises(ValueError, match="distinct"):
    toom_cook(4, 4, (0, 1, -1, 2, 2, 3))
  with pytest.raises(ValueError, match="needs 6"):
    toom_cook(4, 4, (0, 1, -1))


# (batch, length, c_in, c_out, taps, pad_l, pad_r): the polyphase layers' 7 taps, lengths that
# leave a partial tile, a kernel shorter than a tile and one that is a whole number of segments.
SHAPES = [
  (2, 16, 128, 136, 7, 3, 3),
  (3, 37, 129, 128, 7, 2, 4),
  (2, 9, 128, 128, 3, 1, 1),
  (1, 24, 144, 128, 8, 0, 7),
  (2, 12, 128, 132, 25, 12, 12),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_winograd_correlate_equals_the_direct_convolution(shape):
  b, length, c_in, c_out, taps, pad_l, pad_r = shape
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (b, length, c_in))
  w = jax.random.normal(kw, (taps, c_in, c_out))
  got = jax.jit(winograd_correlate, static_argnums=(2, 3))(x, w, pad_l, pad_r)
  want = _direct(x, w, pad_l, pad_r)
  assert got.shape == want.shape
  assert _rel_err(got, want) < RTOL


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_conv1d_winograd_derivatives_match_direct_to_second_order(shape):
  """Forward, input gradient, weight gradient and the gradient penalty's double backward."""
  b, length, c_in, c_out, taps, pad_l, pad_r = shape
  kx, kw, kv = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(kx, (b, length, c_in))
  w = jax.random.normal(kw, (taps, c_in, c_out)) / 8

  def directions(algorithm):
    def f(x, w):
      with conv_algorithm(algorithm):
        return conv1d(x, w, pad_l, pad_r)

    v = jax.random.normal(kv, f(x, w).shape)
    loss = lambda x, w: jnp.sum(jnp.sin(f(x, w)) * v)
    return (
      f(x, w),
      jax.grad(loss, 0)(x, w),
      jax.grad(loss, 1)(x, w),
      jax.grad(lambda w: jnp.sum(jax.grad(loss, 0)(x, w) ** 2))(w),
    )

  for got, want in zip(directions("winograd"), directions("direct")):
    assert _rel_err(got, want) < RTOL


def test_winograd_is_used_only_where_it_pays():
  x, w = jnp.zeros((2, 16, 128)), jnp.zeros((7, 128, 256))
  assert winograd_suits(x, w, 3, 3)
  assert not winograd_suits(jnp.zeros((2, 16, 64)), jnp.zeros((7, 64, 256)), 3, 3)  # narrow in
  assert not winograd_suits(x, jnp.zeros((7, 128, 64)), 3, 3)  # narrow out
  assert not winograd_suits(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 3, 3)
  assert not winograd_suits(jnp.zeros((2, 2, 128)), w, 0, 0)  # no whole tile


def test_conv_algorithm_is_scoped_and_checked():
  assert layers._ALGORITHM.get() == "auto"
  with conv_algorithm("direct"):
    assert layers._ALGORITHM.get() == "direct"
  assert layers._ALGORITHM.get() == "auto"
  assert resolved_algorithm("auto") == ("winograd" if jax.default_backend() == "cpu" else "direct")
  assert resolved_algorithm("direct") == "direct"
  with pytest.raises(ValueError, match="conv algorithm"):
    with conv_algorithm("fft"):
      pass
  with pytest.raises(ConfigError, match="compute.conv"):
    ComputeConfig(conv="fft").validate()


def test_direct_is_the_plain_xla_convolution_bit_for_bit():
  """compute.conv=direct keeps the numerics from before the Winograd form."""
  kx, kw = jax.random.split(jax.random.key(3))
  x, w = jax.random.normal(kx, (2, 16, 128)), jax.random.normal(kw, (7, 128, 256))
  with conv_algorithm("direct"):  # read when traced: a new function, traced here
    got = jax.jit(lambda x, w: conv1d(x, w, 3, 3))(x, w)
  want = jax.jit(_direct, static_argnums=(2, 3))(x, w, 3, 3)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_whole_networks_gradients_match_direct():
  """G and D at d=16 (Winograd in G's first two layers and D's last two): the gradients of a
  WGAN-GP critic loss and of G's loss agree with the direct form's to 1e-4 (relative L2)."""
  from flax import nnx

  from wavegan.config import ModelConfig
  from wavegan.models.waveform import Discriminator, Generator

  cfg = ModelConfig(dim=16, slice_len=16384, phase_shuffle=0)
  g_graph, g_params = nnx.split(Generator(cfg, rngs=nnx.Rngs(0)))
  d_graph, d_params = nnx.split(Discriminator(cfg, rngs=nnx.Rngs(1)))
  z = jax.random.uniform(jax.random.key(2), (2, cfg.latent_dim), minval=-1, maxval=1)
  real = jax.random.normal(jax.random.key(3), (2, cfg.slice_len, 1)) * 0.3
  key = jax.random.key(4)

  def losses(algorithm):
    with conv_algorithm(algorithm):
      gen = lambda gp: nnx.merge(g_graph, gp)(z)
      critic = lambda dp, x: jnp.sum(nnx.merge(d_graph, dp)(x, None, key))

      def d_loss(dp):
        fake = jax.lax.stop_gradient(gen(g_params))
        grad_x = jax.grad(critic, 1)(dp, 0.5 * (real + fake))
        return critic(dp, fake) - critic(dp, real) + 10 * jnp.sum(grad_x**2)

      return (
        jax.jit(jax.grad(d_loss))(d_params),
        jax.jit(jax.grad(lambda gp: -critic(d_params, gen(gp))))(g_params),
      )

  for got, want in zip(losses("winograd"), losses("direct")):
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(got)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(want)])
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4


def test_synthesis_follows_the_runs_setting():
  """Generation uses the convolutions it is given (a run folder's `compute.conv`): direct is
  bit for bit the direct form, Winograd the same audio to float32 rounding."""
  from flax import nnx

  from wavegan.config import ModelConfig
  from wavegan.models.waveform import Generator
  from wavegan.synthesis.synthesizer import audio_fn

  model = ModelConfig(dim=16)
  graph, params = nnx.split(Generator(model, rngs=nnx.Rngs(0)))
  z = jax.random.uniform(jax.random.key(1), (2, model.latent_dim), minval=-1, maxval=1)
  direct = jax.jit(audio_fn(model, graph, None, "direct"))(params, z, None)
  winograd = jax.jit(audio_fn(model, graph, None, "winograd"))(params, z, None)
  with conv_algorithm("direct"):
    want = jax.jit(lambda p, z: nnx.merge(graph, p)(z))(params, z)
  np.testing.assert_array_equal(np.asarray(direct), np.asarray(want))
  assert 0 < _rel_err(winograd, direct) < RTOL
