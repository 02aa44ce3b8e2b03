"""The jitted GAN step: finite, compiled once, deterministic, resumable, and able to learn."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from checkpoints import Checkpointer
from wavegan.config import Config, ConfigError, ModelConfig, apply_overrides
from wavegan.models.waveform import Discriminator
from wavegan.presets import preset
from wavegan.training import step as ts
from wavegan.training.loop import RESUMABLE_CHANGES, _from_tree, _to_tree, abstract_state


def tiny(**sets):
  return apply_overrides(preset("tiny"), [f"{k}={v}" for k, v in sets.items()])


def fake_batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  n, b = cfg.optim.n_critic, cfg.train.batch_size
  real = rng.uniform(-1, 1, (n, b, cfg.model.slice_len, cfg.model.channels)).astype(np.float32)
  styles = rng.integers(0, max(cfg.model.num_styles, 1), (n, b)).astype(np.int32)
  return jnp.asarray(real), jnp.asarray(styles)


def setup(cfg):
  models, state = ts.build(cfg)
  mesh = ts.data_mesh()
  state = jax.device_put(state, NamedSharding(mesh, P()))
  return models, state, ts.make_train_step(models, cfg, mesh)


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge", "lsgan", "nonsaturating"])
def test_step_is_finite_and_compiles_once(loss):
  cfg = tiny(**{"model.num_styles": 3, "optim.loss": loss})
  models, state, step = setup(cfg)
  before = jax.tree.map(np.asarray, state.g_params)
  real, styles = fake_batch(cfg)
  state, metrics = step(state, real, styles)
  state, metrics = step(state, real, styles)
  assert step._cache_size() == 1
  assert int(state.step) == 2
  for name, value in metrics.items():
    assert np.isfinite(float(value)), name
  for leaf in jax.tree.leaves(state):
    assert bool(jnp.all(jnp.isfinite(leaf)))
  changed = [
    not np.array_equal(a, np.asarray(b))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.g_params))
  ]
  assert all(changed)


def test_same_seed_same_result():
  cfg = tiny()
  results = []
  for _ in range(2):
    _, state, step = setup(cfg)
    state, metrics = step(state, *fake_batch(cfg))
    results.append((jax.tree.map(np.asarray, state.ema_params), float(metrics["d/loss"])))
  assert results[0][1] == results[1][1]
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_array_equal(a, b)


def test_save_restore_gives_identical_next_step(tmp_path):
  cfg = tiny(**{"model.num_styles": 2})
  _, state, step = setup(cfg)
  state, _ = step(state, *fake_batch(cfg, 0))
  with Checkpointer(str(tmp_path / "ck"), keep=1) as ck:
    ck.save(1, _to_tree(state), {"note": "test"})
    ck.wait()
    tree, md = ck.restore(abstract_state(cfg, NamedSharding(ts.data_mesh(), P())))
  assert md == {"note": "test"}
  restored = _from_tree(tree)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # `state` is donated by the next call, so take host copies first.
  batch = fake_batch(cfg, 1)
  a_state, a_metrics = step(state, *batch)
  a = jax.tree.map(np.asarray, a_state)
  b_state, b_metrics = step(restored, *batch)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b_state)):
    np.testing.assert_array_equal(x, np.asarray(y))
  assert float(a_metrics["g/loss"]) == float(b_metrics["g/loss"])


def test_tiny_discriminator_learns_sine_vs_noise():
  cfg = ModelConfig(dim=4, phase_shuffle=2)
  d = Discriminator(cfg, rngs=nnx.Rngs(0))
  graph, params = nnx.split(d, nnx.Param)
  tx = optax.adam(1e-3)
  opt = tx.init(params)
  t = np.arange(cfg.slice_len) / 16000.0

  def batch(rng, n=8):
    f = rng.uniform(100, 2000, (n, 1))
    sines = 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (n, 1)))
    noise = rng.uniform(-0.5, 0.5, (n, cfg.slice_len))
    x = np.concatenate([sines, noise])[..., None].astype(np.float32)
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)

  def loss_fn(params, x, y, key):
    logits = nnx.merge(graph, params)(x, None, key)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

  @jax.jit
  def update(params, opt, x, y, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(0)
  for i in range(150):
    params, opt, loss = update(params, opt, *batch(rng), jax.random.key(i))
  x, y = batch(np.random.default_rng(123), 32)
  logits = nnx.merge(graph, params)(x, None, jax.random.key(999))
  accuracy = float(jnp.mean((logits > 0) == (y > 0.5)))
  assert accuracy > 0.95, accuracy


def test_batch_must_divide_over_devices():
  mesh = ts.data_mesh()
  ts.check_batch(mesh.size * 3, mesh)
  if mesh.size > 1:
    with pytest.raises(ValueError, match="does not divide"):
      ts.check_batch(mesh.size * 3 + 1, mesh)


def test_eight_simulated_devices_match_one(tmp_path):
  """The same global batch on a mesh of 8 CPU devices gives the 1-device step's result."""
  script = textwrap.dedent("""
      import os, sys
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
      import jax, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from wavegan.training import step as ts
      from wavegan.config import apply_overrides
      from wavegan.presets import preset
      cfg = apply_overrides(preset("tiny"), ["train.batch_size=8", "model.num_styles=3"])
      rng = np.random.default_rng(0)
      real = rng.uniform(-1, 1, (2, 8, 16384, 1)).astype(np.float32)
      styles = rng.integers(0, 3, (2, 8)).astype(np.int32)
      out = {}
      for n in (1, 8):
        mesh = ts.data_mesh(jax.devices()[:n])
        models, state = ts.build(cfg)
        state = jax.device_put(state, NamedSharding(mesh, P()))
        step = ts.make_train_step(models, cfg, mesh)
        x = jax.device_put(real, NamedSharding(mesh, P(None, "data")))
        y = jax.device_put(styles, NamedSharding(mesh, P(None, "data")))
        state, m = step(state, x, y)
        out[n] = (jax.tree.map(np.asarray, state.g_params), float(m["d/loss"]))
      worst = max(float(np.max(np.abs(a - b))) for a, b in
                  zip(jax.tree.leaves(out[1][0]), jax.tree.leaves(out[8][0])))
      print("MAXDIFF", worst, out[1][1], out[8][1])
      """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  res = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
    cwd=os.path.dirname(os.path.dirname(__file__)),
  )
  assert res.returncode == 0, res.stderr[-2000:]
  line = [l for l in res.stdout.splitlines() if l.startswith("MAXDIFF")][0].split()
  assert float(line[1]) < 1e-5, line
  assert abs(float(line[2]) - float(line[3])) < 1e-4 * max(1.0, abs(float(line[2]))), line


def test_film_acgan_and_unconditional_share_train():
  cfg = tiny(
    **{
      "model.num_styles": 3,
      "model.g_cond": "film",
      "model.d_cond": "acgan",
      "optim.uncond_share": 0.5,
    }
  )
  models, state, step = setup(cfg)
  real, styles = fake_batch(cfg)
  film_before = np.asarray(state.g_params["film"][1]["kernel"])
  assert not np.any(film_before)  # FiLM starts as the identity
  state, metrics = step(state, real, styles)
  state, metrics = step(state, real, styles)
  assert {"d/ac", "g/ac"} <= set(metrics)
  for name, value in metrics.items():
    assert np.isfinite(float(value)), name
  # The style reaches G through FiLM (its weights learn) and D through its classifier head.
  assert np.any(np.asarray(state.g_params["film"][1]["kernel"]))
  assert "classifier" in state.d_params and "style_proj" not in state.d_params
  g = models.generator(state.g_params)
  z = ts.sample_latents(jax.random.key(0), 2, cfg.model.latent_dim)
  a, b = g(z, jnp.array([0, 0])), g(z, jnp.array([1, 1]))
  assert not np.allclose(np.asarray(a), np.asarray(b))
  none = g(z, jnp.zeros((2, 3)))  # no style: what the unconditional share trains
  assert np.all(np.isfinite(np.asarray(none))) and not np.allclose(np.asarray(none), np.asarray(a))


def test_extra_discriminators_train_with_feature_matching_and_stft_loss():
  cfg = tiny(
    **{
      "model.num_styles": 2,
      "model.aux_discs": "mrstft,msd,mpd",
      "model.aux_width": 2,
      "optim.stft_weight": 1.0,
    }
  )
  models, state, step = setup(cfg)
  assert set(state.d_params) == {"main", "aux"}
  assert models.aux(state.d_params).names == ("mrstft", "msd", "mpd")
  before = jax.tree.map(np.asarray, state.d_params["aux"])
  real, styles = fake_batch(cfg)
  state, metrics = step(state, real, styles)
  assert {"d/aux", "g/aux", "g/fm", "g/stft"} <= set(metrics)
  for name, value in metrics.items():
    assert np.isfinite(float(value)), name
  # Every extra critic learns, as does the main one.
  moved = [
    not np.array_equal(a, np.asarray(b))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.d_params["aux"]))
  ]
  assert all(moved)
  # A run without extra critics keeps the main critic's parameters at the top level.
  _, plain = ts.build(tiny(**{"model.num_styles": 2}))
  assert jax.tree.structure(plain.d_params) == jax.tree.structure(state.d_params["main"])


def test_several_label_fields_and_attributes_condition_the_step():
  # Two label fields (3 and 2 values) and one attribute: the style vector is [B, 3 + 2 + 1].
  for d_cond in ("acgan",):  # the AC head has one loss per field and per attribute
    cfg = tiny(
      **{
        "model.style_groups": "3,2",
        "model.num_attributes": 1,
        "model.d_cond": d_cond,
        "model.g_cond": "film",
        "optim.uncond_share": 0.25,
      }
    )
    assert cfg.model.cond_dim == 6 and cfg.model.conditional
    models, state, step = setup(cfg)
    real, _ = fake_batch(cfg)
    rng = np.random.default_rng(1)
    n, b = real.shape[:2]
    vec = np.concatenate(
      [
        np.eye(3)[rng.integers(0, 3, (n, b))],
        np.eye(2)[rng.integers(0, 2, (n, b))],
        rng.normal(size=(n, b, 1)),
      ],
      axis=-1,
    ).astype(np.float32)
    state, metrics = step(state, real, jnp.asarray(vec))
    for name, value in metrics.items():
      assert np.isfinite(float(value)), name
    if d_cond == "acgan":
      assert "g/ac" in metrics
    g = models.generator(state.g_params)
    z = ts.sample_latents(jax.random.key(0), 2, cfg.model.latent_dim)
    # Ids per field are accepted too, with the attribute at its mean (0).
    by_ids = g(z, jnp.array([[0, 1], [2, 0]]))
    by_vec = g(z, jnp.array([[1, 0, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0]], jnp.float32))
    np.testing.assert_allclose(np.asarray(by_ids), np.asarray(by_vec), atol=1e-6)
    higher = g(z, jnp.array([[1, 0, 0, 0, 1, 2.0], [0, 0, 1, 1, 0, 2.0]], jnp.float32))
    assert not np.allclose(np.asarray(higher), np.asarray(by_vec))


def _one_step(cfg, seed=0):
  _, state, step = setup(cfg)
  state, metrics = step(state, *fake_batch(cfg, seed))
  return jax.tree.map(np.asarray, state), {k: float(v) for k, v in metrics.items()}


def test_accumulated_micro_batches_and_remat_give_the_full_batch_step():
  # Same randomness, sliced: 2 micro-batches of 4 give the gradient of the batch of 8; remat
  # recomputes the same activations. With AC-GAN and an unconditional share, the class loss
  # divides by the whole batch's number of rows with a style, not by each micro-batch's.
  base = [
    "train.batch_size=8",
    "model.num_styles=3",
    "model.d_cond=acgan",
    "optim.uncond_share=0.5",
  ]
  ref_state, ref_metrics = _one_step(apply_overrides(preset("tiny"), base))
  for extra in (["compute.grad_accum=2"], ["compute.remat=true"]):
    state, metrics = _one_step(apply_overrides(preset("tiny"), base + extra))
    for key in ("d/loss", "g/loss", "d/gp", "d/ac", "g/ac", "d/grad_norm", "g/grad_norm"):
      assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-4, abs=1e-6), (extra, key)
    for name in ("g_params", "d_params"):
      for a, b in zip(
        jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(ref_state, name))
      ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
  with pytest.raises(Exception, match="micro-batches"):
    apply_overrides(preset("tiny"), base + ["compute.grad_accum=3"]).validate()


def test_grad_accum_may_change_on_resume_since_it_trains_the_same_step():
  # Micro-batches give the full batch's step (above) for every config they accept; the others
  # are refused, on resume too.
  assert "compute.grad_accum" in RESUMABLE_CHANGES
  with pytest.raises(ConfigError, match="grad_accum"):
    apply_overrides(preset("tiny"), ["model.aux_discs=msd", "compute.grad_accum=2"]).validate()


@pytest.mark.parametrize("loss", ["hinge"])  # every loss' weight: test_step_functions.py
def test_losses_other_than_wgan_gp_have_no_gradient_penalty_unless_asked(loss):
  _, metrics = _one_step(tiny(**{"optim.loss": loss}))
  assert metrics["d/gp"] == 0.0 and metrics["d/loss"] == metrics["d/adv"]
  _, metrics = _one_step(tiny(**{"optim.loss": loss, "optim.gp_weight": 10.0}))
  assert metrics["d/gp"] > 0
  assert metrics["d/loss"] == pytest.approx(metrics["d/adv"] + 10.0 * metrics["d/gp"], rel=1e-5)


def test_old_runs_recorded_gp_weight_is_kept():
  # Runs from before the per-loss default stored the weight they trained with.
  old = Config.from_dict({"optim": {"loss": "hinge", "gp_weight": 10.0}})
  assert old.validate().optim.gp_weight == 10.0
  assert apply_overrides(old, ["optim.gp_weight=none"]).validate().optim.gp_weight == 0.0
  assert apply_overrides(old, ["optim.gp_weight=2.5"]).optim.gp_weight == 2.5


def test_bfloat16_step_is_finite_keeps_float32_state_and_is_close():
  cfg = tiny(**{"model.num_styles": 3})
  ref_state, ref_metrics = _one_step(cfg)
  state, metrics = _one_step(apply_overrides(cfg, ["compute.dtype=bfloat16"]))
  assert all(np.isfinite(v) for v in metrics.values())
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(state.g_params))
  assert all(
    leaf.dtype == np.float32
    for leaf in jax.tree.leaves(state.d_opt)
    if np.issubdtype(leaf.dtype, np.floating)
  )
  # bf16 keeps 8 bits of mantissa: losses within a few percent.
  for key in ("d/adv", "g/adv", "d/grad_norm"):
    assert metrics[key] == pytest.approx(ref_metrics[key], rel=0.05, abs=0.02), key
  # Adam's first step moves each parameter by about lr * sign(gradient): bf16 gradients must
  # point the same way as f32 ones for nearly every parameter (chance would be half).
  init = jax.tree.leaves(ts.build(cfg)[1].g_params)
  same = [
    np.sign(a - i) == np.sign(b - i)
    for a, b, i in zip(jax.tree.leaves(state.g_params), jax.tree.leaves(ref_state.g_params), init)
  ]
  share = np.concatenate([x.ravel() for x in same]).mean()
  assert share > 0.9, share
