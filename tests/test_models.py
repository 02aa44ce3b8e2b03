"""WaveGAN G and D: parameter counts, shapes, ranges, layer equivalences, determinism."""

import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavegan.config import ModelConfig
from wavegan.models.layers import Downsample1d, Upsample1d, phase_shuffle, same_pad_before
from wavegan.models.waveform import Discriminator, Generator


def count(module_fn) -> int:
  state = nnx.state(nnx.eval_shape(module_fn), nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


@pytest.mark.parametrize(
  "slice_len,g_params,d_params",
  [
    (16384, 19_065_345, 17_427_969),  # the paper's model (and the PyTorch reference)
    (32768, 73_149_953, 69_875_201),
    (65536, 73_149_953, 69_875_201),
  ],
)
def test_parameter_counts(slice_len, g_params, d_params):
  cfg = ModelConfig(slice_len=slice_len, dim=64)
  assert count(lambda: Generator(cfg, rngs=nnx.Rngs(0))) == g_params
  assert count(lambda: Discriminator(cfg, rngs=nnx.Rngs(0))) == d_params


def test_conditioning_adds_parameters_only_when_conditional():
  base = ModelConfig(dim=4)
  assert count(lambda: Generator(ModelConfig(dim=4, num_styles=1), rngs=nnx.Rngs(0))) == count(
    lambda: Generator(base, rngs=nnx.Rngs(0))
  )
  assert count(lambda: Generator(ModelConfig(dim=4, num_styles=6), rngs=nnx.Rngs(0))) > count(
    lambda: Generator(base, rngs=nnx.Rngs(0))
  )


@pytest.mark.parametrize("slice_len", [16384, 32768, 65536])
@pytest.mark.parametrize("channels", [1, 2])
def test_shapes_and_ranges(slice_len, channels):
  cfg = ModelConfig(
    slice_len=slice_len,
    channels=channels,
    dim=2,
    latent_dim=8,
    num_styles=3,
    style_dim=4,
    post_filter_len=(16 if channels == 2 else 0),
  )
  g = Generator(cfg, rngs=nnx.Rngs(0))
  d = Discriminator(cfg, rngs=nnx.Rngs(1))
  z = jax.random.uniform(jax.random.key(0), (3, 8), minval=-1, maxval=1)
  style = jnp.array([0, 1, 2])
  x = g(z, style)
  assert x.shape == (3, slice_len, channels)
  assert x.dtype == jnp.float32
  if not cfg.post_filter_len:
    assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert bool(jnp.all(jnp.isfinite(x)))
  assert float(jnp.std(x)) > 0
  logits = d(x, style, jax.random.key(2))
  assert logits.shape == (3,)
  assert bool(jnp.all(jnp.isfinite(logits)))


def _transposed_conv_reference(x, w, stride):
  """TF conv1d_transpose, 'SAME', written as the definition: y[n] = sum_m x[m] W[n + p - s m]."""
  b, length, _ = x.shape
  k = w.shape[0]
  p = same_pad_before(k, stride)
  y = np.zeros((b, stride * length, w.shape[2]))
  for n in range(stride * length):
    for m in range(length):
      if 0 <= n + p - stride * m < k:
        y[:, n] += x[:, m] @ w[n + p - stride * m]
  return y


def _strided_conv_reference(x, w, stride):
  """TF conv1d, 'SAME': y[m] = sum_k x[s m + k - p] W[k]."""
  b, n, _ = x.shape
  k = w.shape[0]
  p = same_pad_before(k, stride)
  y = np.zeros((b, n // stride, w.shape[2]))
  for m in range(n // stride):
    for j in range(k):
      if 0 <= stride * m + j - p < n:
        y[:, m] += x[:, stride * m + j - p] @ w[j]
  return y


@pytest.mark.parametrize("stride", [4, 2])
def test_polyphase_upsample_equals_transposed_conv(stride):
  layer = Upsample1d(3, 5, 25, stride, rngs=nnx.Rngs(0))
  layer.bias[...] = jnp.arange(5.0)
  x = np.random.default_rng(0).standard_normal((2, 12, 3)).astype(np.float32)
  want = _transposed_conv_reference(x, np.asarray(layer.kernel[...]), stride) + np.arange(5.0)
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), want, atol=1e-5)


@pytest.mark.parametrize("stride", [4, 2])
def test_downsample_equals_strided_conv(stride):
  layer = Downsample1d(3, 5, 25, stride, rngs=nnx.Rngs(0))
  x = np.random.default_rng(1).standard_normal((2, 48, 3)).astype(np.float32)
  want = _strided_conv_reference(x, np.asarray(layer.kernel[...]), stride)
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), want, atol=1e-5)


def test_phase_shuffle_matches_tf_definition():
  """TF: pad (max(k,0), max(-k,0)) with reflection, then crop from max(-k,0)."""
  x = np.random.default_rng(2).standard_normal((2, 10, 3)).astype(np.float32)
  seen = set()
  for seed in range(40):
    rng = jax.random.key(seed)
    k = int(jax.random.randint(rng, (), -2, 3))
    seen.add(k)
    pl, pr = max(k, 0), max(-k, 0)
    padded = np.pad(x, ((0, 0), (pl, pr), (0, 0)), mode="reflect")
    want = padded[:, pr : pr + 10]
    np.testing.assert_array_equal(np.asarray(phase_shuffle(jnp.asarray(x), rng, 2)), want)
  assert seen == {-2, -1, 0, 1, 2}
  np.testing.assert_array_equal(np.asarray(phase_shuffle(jnp.asarray(x), jax.random.key(0), 0)), x)


def test_same_seed_same_params_and_audio():
  cfg = ModelConfig(dim=4, num_styles=3)
  z = jax.random.uniform(jax.random.key(5), (2, cfg.latent_dim), minval=-1, maxval=1)
  outs = []
  for _ in range(2):
    g = Generator(cfg, rngs=nnx.Rngs(7))
    outs.append((nnx.state(g, nnx.Param), np.asarray(g(z, jnp.array([0, 2])))))
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(outs[0][1], outs[1][1])
  other = Generator(cfg, rngs=nnx.Rngs(8))
  assert not np.array_equal(np.asarray(other(z, jnp.array([0, 2]))), outs[0][1])


def test_style_changes_audio_and_one_hot_mix_equals_id():
  cfg = ModelConfig(dim=4, num_styles=3)
  g = Generator(cfg, rngs=nnx.Rngs(0))
  z = jnp.zeros((1, cfg.latent_dim)) + 0.3
  a, b = g(z, jnp.array([0])), g(z, jnp.array([1]))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  mix = g(z, jnp.array([[0.0, 1.0, 0.0]]))
  np.testing.assert_allclose(np.asarray(mix), np.asarray(b), atol=1e-6)
  with pytest.raises(ValueError, match="style"):
    g(z)


@pytest.mark.parametrize("c_in", [3, 16])  # both weight-gradient paths
@pytest.mark.parametrize("pads", [(3, 3), (2, 4), (0, 0)])
def test_conv1d_gradients_match_xla_to_second_order(pads, c_in):
  """The custom VJP of `conv1d` gives XLA's own first and second derivatives."""
  from wavegan.models.layers import conv1d

  def xla_conv(x, w, pl, pr):
    return jax.lax.conv_general_dilated(
      x, w, (1,), [(pl, pr)], dimension_numbers=("NWC", "WIO", "NWC")
    )

  kx, kw = jax.random.split(jax.random.key(0))
  x, w = jax.random.normal(kx, (2, 12, c_in)), jax.random.normal(kw, (7, c_in, 5))

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, *pads)))

  for argnum in (0, 1):
    np.testing.assert_allclose(
      jax.grad(loss(conv1d), argnum)(x, w),
      jax.grad(loss(xla_conv), argnum)(x, w),
      rtol=1e-5,
      atol=1e-5,
    )

  def penalty_grad(conv):  # d/dw ||d loss / dx||^2, as in WGAN-GP
    return jax.grad(lambda w: jnp.sum(jax.grad(loss(conv), 0)(x, w) ** 2))(w)

  np.testing.assert_allclose(penalty_grad(conv1d), penalty_grad(xla_conv), rtol=1e-4, atol=1e-4)


# The TF code's critic: five stride-4 layers, then for the longer slices a sixth with stride 2
# (32768) or 4 (65536), each time length the output of one layer.
REFERENCE_CRITIC_LENGTHS = {
  16384: [4096, 1024, 256, 64, 16],
  32768: [8192, 2048, 512, 128, 32, 16],
  65536: [16384, 4096, 1024, 256, 64, 16],
}
# ... and its generator: five stride-4 upsamplings, then the longer slices' sixth (stride 2 or 4).
REFERENCE_GENERATOR_LENGTHS = {
  16384: [64, 256, 1024, 4096, 16384],
  32768: [64, 256, 1024, 4096, 16384, 32768],
  65536: [64, 256, 1024, 4096, 16384, 65536],
}


def _layer_shapes(layers, shape):
  """Output shapes of `layers` applied in order to a float32 input of `shape` (nothing computed)."""
  x, shapes = jax.ShapeDtypeStruct(shape, jnp.float32), []
  for layer in layers:
    x = jax.eval_shape(layer, x)
    shapes.append(x.shape)
  return shapes


@pytest.mark.parametrize("slice_len", [16384, 32768, 65536])
def test_layer_lengths_follow_the_reference(slice_len):
  cfg = ModelConfig(slice_len=slice_len, dim=1, latent_dim=4)
  d = Discriminator(cfg, rngs=nnx.Rngs(0))
  lengths = [s[1] for s in _layer_shapes(d.downs, (1, slice_len, 1))]
  assert lengths == REFERENCE_CRITIC_LENGTHS[slice_len]
  g = Generator(cfg, rngs=nnx.Rngs(0))
  lengths = [s[1] for s in _layer_shapes(g.ups, (1, g.base_len, g.ups[0].kernel.shape[1]))]
  assert lengths == REFERENCE_GENERATOR_LENGTHS[slice_len]


def _bench_common():
  """benchmarks/common.py (no JAX inside), imported from its path."""
  path = Path(__file__).resolve().parent.parent / "benchmarks" / "common.py"
  spec = importlib.util.spec_from_file_location("bench_common", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # its dataclasses look their module up
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("slice_len", [16384, 32768, 65536])
def test_analytic_flops_count_the_layers_as_built(slice_len):
  """The benchmarks' FLOP formulas (conv: L_out * C_in * C_out * K MACs, transposed conv: L_in *
  ..., dense: in * out) applied to the shapes of the models this package builds."""
  cfg = ModelConfig(slice_len=slice_len, dim=2, latent_dim=4, channels=2)
  g, d = Generator(cfg, rngs=nnx.Rngs(0)), Discriminator(cfg, rngs=nnx.Rngs(1))
  flops = _bench_common().flop_counts(
    cfg.dim, slice_len, latent_dim=cfg.latent_dim, kernel_len=cfg.kernel_len, channels=2
  )
  outs = _layer_shapes(d.downs, (1, slice_len, 2))
  d_convs = [2 * out[1] * math.prod(down.kernel.shape) for down, out in zip(d.downs, outs)]
  assert flops["d_layers"] == d_convs
  assert flops["d_fwd"] == sum(d_convs) + 2 * math.prod(d.out.kernel.shape)
  ins = [(1, g.base_len)] + _layer_shapes(g.ups, (1, g.base_len, g.ups[0].kernel.shape[1]))[:-1]
  g_convs = [2 * shape[1] * math.prod(up.kernel.shape) for up, shape in zip(g.ups, ins)]
  assert flops["g_layers"] == g_convs
  assert flops["g_fwd"] == 2 * math.prod(g.project.kernel.shape) + sum(g_convs)
