"""G's nearest-neighbour upsampling, D's minibatch std and spectral norm: layers against numpy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavegan.config import apply_overrides
from wavegan.models.layers import (
  NearestUpsample1d,
  Upsample1d,
  minibatch_std,
  spectral_normalize,
)
from wavegan.models.waveform import SPECTRAL_ITERS, Discriminator, Generator, base_len
from wavegan.presets import preset
from wavegan.training import step as ts

# ---------------------------------------------------------------------------------------------
# Nearest-neighbour upsampling


def _nearest_reference(x, w, stride):
  """The authors' `nn` layer as written: np.repeat, then a TF 'SAME' stride-1 correlation."""
  u = np.repeat(x.astype(np.float64), stride, axis=1)  # [B, s*L, C_in]
  k = w.shape[0]
  p = (k - 1) // 2
  up = np.pad(u, ((0, 0), (p, k - 1 - p), (0, 0)))
  y = np.zeros((x.shape[0], u.shape[1], w.shape[2]))
  for n in range(u.shape[1]):
    for t in range(k):
      y[:, n] += up[:, n + t] @ w[t]
  return y


def _nearest_jnp(x, w, b, stride):
  """The same layer in jnp at the upsampled rate, for gradients."""
  u = jnp.repeat(x, stride, axis=1)
  y = jax.lax.conv_general_dilated(u, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  return y + b


@pytest.mark.parametrize(
  "kernel_len,stride,length",
  [(25, 4, 12), (24, 4, 6), (25, 2, 9), (5, 2, 7), (3, 3, 4), (2, 5, 3), (1, 2, 5), (7, 1, 6)],
)
def test_nearest_upsample_equals_repeat_then_same_conv(kernel_len, stride, length):
  layer = NearestUpsample1d(3, 5, kernel_len, stride, rngs=nnx.Rngs(0))
  layer.bias[...] = jnp.arange(5.0)
  x = np.random.default_rng(kernel_len).standard_normal((2, length, 3)).astype(np.float32)
  want = _nearest_reference(x, np.asarray(layer.kernel[...]), stride) + np.arange(5.0)
  got = np.asarray(layer(jnp.asarray(x)))
  assert got.shape == (2, stride * length, 5)
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kernel_len,stride", [(25, 4), (4, 2)])
def test_nearest_upsample_gradients(kernel_len, stride):
  layer = NearestUpsample1d(3, 4, kernel_len, stride, rngs=nnx.Rngs(1))
  w, b = layer.kernel[...], layer.bias[...]
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((2, 7, 3)), jnp.float32)
  r = jnp.asarray(rng.standard_normal((2, 7 * stride, 4)), jnp.float32)

  graph, state = nnx.split(layer)

  def loss_layer(x, w):
    return jnp.sum(r * nnx.merge(graph, {**state, "kernel": w})(x))

  got = jax.grad(loss_layer, argnums=(0, 1))(x, w)
  want = jax.grad(lambda x, w: jnp.sum(r * _nearest_jnp(x, w, b, stride)), argnums=(0, 1))(x, w)
  for g, h in zip(got, want):
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(np.asarray(g), np.asarray(h), atol=1e-4)


def test_generator_upsampling_forms_share_parameters():
  tiny = preset("tiny").model
  nearest = dataclasses.replace(tiny, g_upsample="nearest")
  g_t, g_n = Generator(tiny, rngs=nnx.Rngs(3)), Generator(nearest, rngs=nnx.Rngs(3))
  assert all(type(up) is Upsample1d for up in g_t.ups)  # the default stays the paper's layer
  assert all(type(up) is NearestUpsample1d for up in g_n.ups)
  p_t, p_n = (
    nnx.to_pure_dict(nnx.state(g_t, nnx.Param)),
    nnx.to_pure_dict(nnx.state(g_n, nnx.Param)),
  )
  assert jax.tree.structure(p_t) == jax.tree.structure(p_n)
  for a, b in zip(jax.tree.leaves(p_t), jax.tree.leaves(p_n)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  z = jax.random.uniform(jax.random.key(0), (2, tiny.latent_dim), minval=-1, maxval=1)
  y_t, y_n = g_t(z), g_n(z)
  assert y_n.shape == y_t.shape == (2, tiny.slice_len, tiny.channels)
  assert bool(jnp.all(jnp.isfinite(y_n))) and float(jnp.max(jnp.abs(y_n - y_t))) > 1e-4


# ---------------------------------------------------------------------------------------------
# Minibatch standard deviation


@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_minibatch_std_matches_numpy(group):
  x = np.random.default_rng(4).standard_normal((6, 5, 3)).astype(np.float32)
  want = np.zeros((6, 5, 1))
  for start in range(0, 6, group):
    clips = x[start : start + group].astype(np.float64)  # [G, L, C]
    stat = np.mean(np.sqrt(np.var(clips, axis=0) + 1e-8))
    want[start : start + group] = stat
  got = np.asarray(minibatch_std(jnp.asarray(x), group))
  assert got.shape == (6, 5, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  if group == 1:  # a clip alone has no spread: sqrt(eps)
    np.testing.assert_allclose(got, 1e-4, rtol=1e-5)


def test_minibatch_std_needs_whole_groups():
  with pytest.raises(ValueError, match="groups of 4"):
    minibatch_std(jnp.zeros((6, 2, 3)), 4)


def test_minibatch_std_couples_clips_within_their_group_only():
  tiny = preset("tiny").model
  x = jnp.asarray(
    np.random.default_rng(5).uniform(-1, 1, (4, tiny.slice_len, tiny.channels)), jnp.float32
  )
  moved = x.at[1].multiply(3.0)  # clip 1 is in the group of clips 0 and 1
  key = jax.random.key(0)
  for group in (0, 2):
    d = Discriminator(dataclasses.replace(tiny, mbstd_group=group), rngs=nnx.Rngs(6))
    assert d.out.kernel.shape == (base_len(tiny) * (16 * tiny.dim + (group > 0)), 1)
    before, after = np.asarray(d(x, None, key)), np.asarray(d(moved, None, key))
    assert before.shape == (4,) and after[1] != before[1]
    np.testing.assert_array_equal(after[2:], before[2:])  # the other group does not see it
    if group:
      assert abs(after[0] - before[0]) > 1e-6  # its group-mate does
    else:
      np.testing.assert_array_equal(after[0], before[0])


# ---------------------------------------------------------------------------------------------
# Spectral normalisation


def _with_spectrum(shape, values, seed):
  """A random matrix of `shape` [M, N] with the given singular values, and its top vectors."""
  rng = np.random.default_rng(seed)
  m, n = shape
  u, _ = np.linalg.qr(rng.standard_normal((m, len(values))))
  v, _ = np.linalg.qr(rng.standard_normal((n, len(values))))
  return (u * values) @ v.T, u[:, 0], v[:, 0]


@pytest.mark.parametrize("shape", [(75, 8), (8, 75), (48, 1), (1, 6), (30, 30)])
def test_spectral_normalize_matches_svd(shape):
  k = min(shape)
  values = 3.0 * 0.5 ** np.arange(k)  # well separated: sigma_2 / sigma_1 = 0.5
  w, _, _ = _with_spectrum(shape, values, seed=sum(shape))
  w = w.astype(np.float32)
  got = np.asarray(spectral_normalize(jnp.asarray(w), 8))
  sigma = np.linalg.svd(w.astype(np.float64), compute_uv=False)[0]
  np.testing.assert_allclose(got, w / sigma, rtol=1e-3, atol=1e-6)  # sigma to 1e-3 relative
  np.testing.assert_allclose(np.linalg.svd(got, compute_uv=False)[0], 1.0, rtol=1e-3)


def test_spectral_normalize_reads_a_kernel_as_k_cin_by_cout():
  # A conv kernel [K, C_in, C_out]: its matrix [K * C_in, C_out]; a generic random spectrum
  # needs more iterations than a well-separated one.
  w = np.random.default_rng(7).standard_normal((25, 3, 8)).astype(np.float32)
  sigma = np.linalg.svd(w.reshape(75, 8).astype(np.float64), compute_uv=False)[0]
  got = spectral_normalize(jnp.asarray(w), 200)
  assert got.shape == w.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), w / sigma, rtol=1e-4, atol=1e-7)
  half = spectral_normalize(jnp.asarray(w, jnp.bfloat16), 200)
  assert half.dtype == jnp.bfloat16


def test_spectral_normalize_gradient_flows_through_sigma_only():
  # d/dW <R, W / sigma> with sigma = u^T W v, u and v constants: R / sigma - <R, W> u v^T / sigma^2.
  w, u, v = _with_spectrum((12, 6), 2.0 * 0.4 ** np.arange(6), seed=8)
  w = w.astype(np.float32)
  r = np.random.default_rng(9).standard_normal(w.shape).astype(np.float32)
  grad = jax.grad(lambda w: jnp.sum(jnp.asarray(r) * spectral_normalize(w, 8)))(jnp.asarray(w))
  assert bool(jnp.all(jnp.isfinite(grad)))
  sigma = 2.0
  want = r / sigma - np.sum(r * w) * np.outer(u, v) / sigma**2
  np.testing.assert_allclose(np.asarray(grad), want, atol=1e-4)


def test_spectral_norm_covers_d_convolutions_and_output_layer_only():
  for d_cond in ("projection", "acgan"):
    model = dataclasses.replace(preset("tiny").model, num_styles=3, d_cond=d_cond)
    plain = Discriminator(model, rngs=nnx.Rngs(10))
    normed = Discriminator(dataclasses.replace(model, spectral_norm=True), rngs=nnx.Rngs(10))
    # The same parameters; normalising the plain critic's weights by hand gives the same outputs.
    for down in plain.downs:
      down.kernel[...] = spectral_normalize(down.kernel[...], SPECTRAL_ITERS)
    plain.out.kernel[...] = spectral_normalize(plain.out.kernel[...], SPECTRAL_ITERS)
    x = jax.random.uniform(jax.random.key(1), (2, model.slice_len, 1), minval=-1, maxval=1)
    style, key = jnp.array([0, 2]), jax.random.key(2)
    (l_p, c_p), (l_n, c_n) = plain.logits(x, style, key), normed.logits(x, style, key)
    np.testing.assert_allclose(np.asarray(l_n), np.asarray(l_p), rtol=1e-4, atol=1e-6)
    if d_cond == "acgan":
      np.testing.assert_allclose(np.asarray(c_n), np.asarray(c_p), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The options in a run


OPTIONS = [["model.g_upsample=nearest"], ["model.mbstd_group=2"], ["model.spectral_norm=true"]]


def test_options_build_and_train_one_step():
  for sets in OPTIONS:
    model = apply_overrides(preset("tiny"), sets).validate().model
    g = nnx.eval_shape(lambda m=model: Generator(m, rngs=nnx.Rngs(0)))
    d = nnx.eval_shape(lambda m=model: Discriminator(m, rngs=nnx.Rngs(1)))
    z = jax.ShapeDtypeStruct((4, model.latent_dim), jnp.float32)
    audio = nnx.eval_shape(lambda g, z: g(z), g, z)
    assert audio.shape == (4, model.slice_len, model.channels)
    assert nnx.eval_shape(lambda d, x: d(x, None, jax.random.key(1)), d, audio).shape == (4,)
  # One compiled step with all three on (each compile is slow on a CPU).
  cfg = apply_overrides(preset("tiny"), [s for sets in OPTIONS for s in sets]).validate()
  models, state = ts.build(cfg)
  rng = np.random.default_rng(0)
  n, b = cfg.optim.n_critic, cfg.train.batch_size
  real = jnp.asarray(rng.uniform(-1, 1, (n, b, cfg.model.slice_len, 1)), jnp.float32)
  styles = jnp.zeros((n, b), jnp.int32)
  state, metrics = ts.make_train_step(models, cfg)(state, real, styles)
  assert metrics and all(np.isfinite(float(v)) for v in metrics.values())
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.d_params))
