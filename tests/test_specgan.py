"""SpecGAN G and D: shapes, conditioning, layer equivalences, gradients and the audio glue."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavegan import dsp
from wavegan.config import ModelConfig
from wavegan.models.layers import same_pad_before
from wavegan.models.specgan import (
  Downsample2d,
  SpecDiscriminator,
  SpecGenerator,
  Upsample2d,
  audio_moments,
  conv2d,
  image_shape,
  spec_features,
  spec_to_waveform,
)

_DN = ("NHWC", "HWIO", "NHWC")


def count(module_fn) -> int:
  state = nnx.state(nnx.eval_shape(module_fn), nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def tiny(**kw) -> ModelConfig:
  return ModelConfig(**{"kind": "specgan", "dim": 2, "latent_dim": 8, "style_dim": 4, **kw})


def build(cls, cfg: ModelConfig, seed: int = 0):
  """`cls(cfg)` with numpy-drawn parameters of the real shapes (~1/sqrt(fan-in) scale).

  On a CPU, eager initialisation compiles the PRNG once per parameter shape, which made it most of
  these tests' time; the real initialisers are checked on the layers themselves.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(seed))))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = math.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in))

  return nnx.merge(graphdef, jax.tree.map(draw, state))


def test_image_shape_and_parameter_counts():
  assert image_shape(ModelConfig()) == (128, 128)
  assert image_shape(ModelConfig(slice_len=32768)) == (256, 128)
  # 5 x 5 kernels hold as many weights as WaveGAN's 25 taps, so the paper's SpecGAN has exactly
  # WaveGAN's parameter counts (see test_models.test_parameter_counts).
  cfg = ModelConfig(kind="specgan", dim=64)
  assert count(lambda: SpecGenerator(cfg, rngs=nnx.Rngs(0))) == 19_065_345
  assert count(lambda: SpecDiscriminator(cfg, rngs=nnx.Rngs(0))) == 17_427_969


# Every conditioning path, over both slice lengths and channel counts. Each new image shape
# compiles every eager op again, so the grid is covered diagonally rather than in full.
CASES = [
  (16384, 1, {}, None, None),
  (16384, 2, {"num_styles": 3, "g_cond": "concat", "d_cond": "projection"}, [0, 2], None),
  (32768, 1, {"num_styles": 3, "g_cond": "film", "d_cond": "acgan"}, [1, 2], 3),
  (
    32768,
    2,
    {"num_styles": 6, "style_groups": (3, 2), "num_attributes": 1, "g_cond": "film"},
    [[0, 1], [2, 0]],
    None,
  ),
  (
    16384,
    1,
    {"num_styles": 6, "style_groups": (3, 2), "num_attributes": 1, "d_cond": "acgan"},
    [[0.2, 0.8, 0.0, 1.0, 0.0, -0.5], [0.0, 0.0, 1.0, 0.0, 1.0, 1.5]],
    6,
  ),
]


@pytest.mark.parametrize("slice_len,channels,kw,style,head", CASES)
def test_shapes_ranges_and_conditioning(slice_len, channels, kw, style, head):
  cfg = tiny(slice_len=slice_len, channels=channels, **kw)
  g, d = build(SpecGenerator, cfg, 0), build(SpecDiscriminator, cfg, 1)
  z = jax.random.uniform(jax.random.key(0), (2, 8), minval=-1, maxval=1)
  style = None if style is None else jnp.asarray(style)
  x = g(z, style)
  assert x.shape == (2, *image_shape(cfg), channels)
  assert x.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert float(jnp.std(x)) > 0
  logit, classes = d.logits(x, style, jax.random.key(1))
  assert logit.shape == (2,) and bool(jnp.all(jnp.isfinite(logit)))
  np.testing.assert_array_equal(np.asarray(d(x, style, jax.random.key(1))), np.asarray(logit))
  if head is None:
    assert classes is None
  else:
    assert classes.shape == (2, head)
  if cfg.conditional:
    with pytest.raises(ValueError, match="style"):
      g(z)
    # Ids and their one-hot vector (attributes at 0) are the same style.
    if jnp.issubdtype(style.dtype, jnp.integer):
      vec = jnp.concatenate(
        [jax.nn.one_hot(style.reshape(2, -1)[:, k], n) for k, n in enumerate(cfg.groups)]
        + [jnp.zeros((2, cfg.num_attributes))],
        axis=-1,
      )
      np.testing.assert_allclose(np.asarray(g(z, vec)), np.asarray(x), atol=1e-6)


def _transposed_conv_reference(x, w, stride):
  """TF conv2d_transpose, 'SAME', per axis y[n] = sum_m x[m] W[n + p - s m], w [K, K, C_in, C_out]."""
  b, h, wd, _ = x.shape
  k = w.shape[0]
  p = same_pad_before(k, stride)
  y = np.zeros((b, stride * h, stride * wd, w.shape[3]))
  for n1 in range(stride * h):
    for m1 in range(h):
      i = n1 + p - stride * m1
      if not 0 <= i < k:
        continue
      for n2 in range(stride * wd):
        for m2 in range(wd):
          j = n2 + p - stride * m2
          if 0 <= j < k:
            y[:, n1, n2] += x[:, m1, m2] @ w[i, j]
  return y


def _check_init(layer, c_in: int, c_out: int):
  """tf.layers' defaults, as in the 1-D layers: Glorot-uniform kernel over K*K*(C_in + C_out)."""
  kernel = np.asarray(layer.kernel[...])
  limit = math.sqrt(6.0 / (25 * (c_in + c_out)))
  assert kernel.shape == (5, 5, c_in, c_out)
  assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
  np.testing.assert_array_equal(np.asarray(layer.bias[...]), np.zeros(c_out))


def test_polyphase_upsample_equals_transposed_conv():
  layer = Upsample2d(3, 5, rngs=nnx.Rngs(0))
  _check_init(layer, 3, 5)
  layer.bias[...] = jnp.arange(5.0)
  x = np.random.default_rng(0).standard_normal((2, 4, 6, 3)).astype(np.float32)  # H != W
  kernel = layer.kernel[...]  # [5, 5, 3, 5]
  got = np.asarray(layer(jnp.asarray(x)))
  assert got.shape == (2, 8, 12, 5)
  # lax.conv_transpose reads TF's [K, K, C_in, C_out] layout as the kernel of the forward
  # convolution it transposes (which maps C_out -> C_in): "HWOI" with transpose_kernel=True,
  # equivalently the spatially flipped kernel as "HWIO" with transpose_kernel=False.
  want = jax.lax.conv_transpose(
    jnp.asarray(x),
    kernel,
    (2, 2),
    "SAME",
    dimension_numbers=("NHWC", "HWOI", "NHWC"),
    transpose_kernel=True,
  )
  flipped = jax.lax.conv_transpose(
    jnp.asarray(x), jnp.flip(kernel, (0, 1)), (2, 2), "SAME", dimension_numbers=_DN
  )
  np.testing.assert_allclose(got, np.asarray(want) + np.arange(5.0), atol=1e-5)
  np.testing.assert_allclose(got, np.asarray(flipped) + np.arange(5.0), atol=1e-5)
  # ... and both are TF's definition.
  np.testing.assert_allclose(
    got, _transposed_conv_reference(x, np.asarray(kernel), 2) + np.arange(5.0), atol=1e-5
  )


def test_space_to_depth_downsample_equals_strided_conv():
  layer = Downsample2d(3, 5, rngs=nnx.Rngs(0))
  _check_init(layer, 3, 5)
  layer.bias[...] = jnp.arange(5.0)
  x = np.random.default_rng(1).standard_normal((2, 8, 12, 3)).astype(np.float32)
  got = np.asarray(layer(jnp.asarray(x)))
  assert got.shape == (2, 4, 6, 5)
  # TF 'SAME' with stride 2 pads 1 before and 2 after, as XLA's "SAME" does.
  want = jax.lax.conv_general_dilated(
    jnp.asarray(x), layer.kernel[...], (2, 2), "SAME", dimension_numbers=_DN
  )
  np.testing.assert_allclose(got, np.asarray(want) + np.arange(5.0), atol=1e-5)


@pytest.mark.parametrize("pad", [(1, 1), (2, 0)])
def test_conv2d_gradients_match_xla_to_second_order(pad):
  """The custom VJP of `conv2d` gives XLA's own first and second derivatives."""

  def xla_conv(x, w, pad):
    return jax.lax.conv_general_dilated(x, w, (1, 1), [pad, pad], dimension_numbers=_DN)

  kx, kw = jax.random.split(jax.random.key(0))
  x, w = jax.random.normal(kx, (2, 6, 5, 3)), jax.random.normal(kw, (3, 3, 3, 4))

  def derivatives(conv, x, w):
    def loss(x, w):
      return jnp.sum(jnp.sin(conv(x, w, pad)))

    dx, dw = jax.grad(loss, (0, 1))(x, w)
    # d/dw ||d loss / dx||^2, as in WGAN-GP.
    penalty = jax.grad(lambda w: jnp.sum(jax.grad(loss, 0)(x, w) ** 2))(w)
    return dx, dw, penalty

  # Jitted: one compilation each instead of one per eager op.
  ours = jax.jit(functools.partial(derivatives, conv2d))(x, w)
  xla = jax.jit(functools.partial(derivatives, xla_conv))(x, w)
  for a, b in zip(ours, xla):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_gradients_of_both_players_are_finite():
  cfg = tiny(num_styles=3, g_cond="film")
  g_def, g_params = nnx.split(build(SpecGenerator, cfg, 0))
  d_def, d_params = nnx.split(build(SpecDiscriminator, cfg, 1))
  z = jax.random.uniform(jax.random.key(0), (2, 8), minval=-1, maxval=1)
  style = jnp.array([0, 2])

  def loss(g_params, d_params):
    d = nnx.merge(d_def, d_params)
    fake = nnx.merge(g_def, g_params)(z, style)  # [B, F, K, C]
    # A gradient penalty too, so D's second derivatives (through conv2d's VJP) are exercised.
    grad_x = jax.grad(lambda x: jnp.sum(d(x, style, jax.random.key(1))))(fake)
    return jnp.mean(d(fake, style, jax.random.key(1))) + jnp.mean(grad_x**2)

  g_grads, d_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(g_params, d_params)
  for grads in (g_grads, d_grads):
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in leaves)


def _noise(n: int, channels: int, seed: int = 0) -> np.ndarray:
  return 0.3 * np.random.default_rng(seed).standard_normal((n, 16384, channels)).astype(np.float32)


def test_spec_features_inverts_to_log_magnitude():
  cfg = ModelConfig(kind="specgan", channels=2)
  audio = _noise(2, 2)
  per_channel = [np.asarray(dsp.log_magnitude(jnp.asarray(audio[..., c]))) for c in range(2)]
  stacked = np.stack(per_channel, axis=-1)  # [B, F, K, C]
  mean = stacked.mean(axis=(0, 1, 3))
  # A std wide enough that every value stays inside the 3-std clip, so denormalize is exact.
  std = np.abs(stacked - mean[:, None]).max(axis=(0, 1, 3)) / 2.5
  feats = jax.jit(spec_features, static_argnames="cfg")(jnp.asarray(audio), mean, std, cfg=cfg)
  assert feats.shape == (2, 128, 128, 2)
  assert float(jnp.max(jnp.abs(feats))) < 1.0
  back = np.asarray(dsp.denormalize(feats, mean[:, None], std[:, None]))  # bins, then C
  np.testing.assert_allclose(back, stacked, atol=1e-4)


def test_audio_moments_in_uneven_chunks_equal_all_at_once():
  cfg = ModelConfig(kind="specgan")
  batches = [_noise(5, 2, seed=1), _noise(2, 2, seed=2) * np.linspace(0, 1, 16384)[None, :, None]]
  mean, std = audio_moments(iter(batches), cfg, chunk=3)  # pieces of 3, 3, 1 (+ 2 padded rows)
  assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (128,)
  everything = np.concatenate(batches)  # [7, T, 2]
  flat = everything.transpose(0, 2, 1).reshape(14, -1)
  want_mean, want_std = dsp.moments(np.asarray(dsp.log_magnitude(jnp.asarray(flat))))
  np.testing.assert_allclose(mean, want_mean, atol=1e-4)
  np.testing.assert_allclose(std, want_std, atol=1e-4)
  with pytest.raises(ValueError):
    audio_moments([], cfg)


def test_spec_to_waveform_shape_and_range():
  cfg = ModelConfig(kind="specgan", channels=2, gl_iters=2)
  images = jax.random.uniform(jax.random.key(0), (2, 128, 128, 2), minval=-1, maxval=1)
  mean, std = np.full(128, -2.0, np.float32), np.full(128, 1.5, np.float32)
  audio = spec_to_waveform(images, mean, std, cfg, seed=3)
  assert audio.shape == (2, 16384, 2)
  assert bool(jnp.all(jnp.isfinite(audio)))
  assert float(jnp.max(jnp.abs(audio))) <= 1.0
  assert float(jnp.std(audio)) > 0
