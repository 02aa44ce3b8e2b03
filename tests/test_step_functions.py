"""The training step's named parts, one at a time: objectives, updates, EMA, micro-batches."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegan.config import ConfigError, apply_overrides
from wavegan.presets import preset
from wavegan.training import step as ts

D_KEYS = {"d/adv", "d/gp", "d/real", "d/fake"}
G_KEYS = {"g/adv"}
ACGAN = ("model.num_styles=3", "model.d_cond=acgan")


def tiny(*sets: str):
  return apply_overrides(preset("tiny"), list(sets)).validate()


def setup(cfg):
  models, state = ts.build(cfg)
  return ts.StepSpec(models, cfg), state


def fake_batch(cfg, seed=0, n=None):
  """Audio [(n,) B, T, C] and style ids [(n,) B]."""
  rng = np.random.default_rng(seed)
  lead = () if n is None else (n,)
  b, m = cfg.train.batch_size, cfg.model
  real = rng.uniform(-1, 1, (*lead, b, m.slice_len, m.channels)).astype(np.float32)
  styles = rng.integers(0, max(m.num_styles, 1), (*lead, b)).astype(np.int32)
  return jnp.asarray(real), jnp.asarray(styles)


def critic_loss(spec, state, seed=0):
  real, styles = fake_batch(spec.cfg, seed)
  rows, shared = ts.critic_draws(spec, jax.random.key(seed), real)
  batch = {"real": real, "styles": styles, "rows": rows}
  fn = jax.jit(lambda d, g: ts.critic_objective(d, g, batch, shared, spec))
  return fn(state.d_params, state.g_params)


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_changed(a, b):
  """Most leaves moved (a few, such as a bias the loss ignores at init, may not)."""
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  moved = [not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs]
  assert np.mean(moved) > 0.5, moved


@pytest.mark.parametrize(
  "sets,extra",
  [((), set()), (ACGAN, {"d/ac"}), (("model.aux_discs=msd", "model.aux_width=2"), {"d/aux"})],
)
def test_critic_objective_is_finite_with_its_metrics(sets, extra):
  spec, state = setup(tiny(*sets))
  loss, metrics = critic_loss(spec, state)
  assert set(metrics) == D_KEYS | extra
  assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values())
  terms = metrics["d/adv"] + 10.0 * metrics["d/gp"] + metrics.get("d/ac", 0.0)
  assert float(loss) == pytest.approx(float(terms + metrics.get("d/aux", 0.0)), rel=1e-5)


@pytest.mark.parametrize(
  "sets,extra",
  [
    ((), set()),
    (ACGAN, {"g/ac"}),
    (
      ("model.aux_discs=msd", "model.aux_width=2", "optim.stft_weight=1"),
      {"g/aux", "g/fm", "g/stft"},
    ),
    (("model.num_styles=3", "optim.stft_weight=1", "optim.stft_by_style=true"), {"g/stft"}),
    (("optim.stft_weight=1", "optim.stft_frames=true"), {"g/stft"}),
  ],
)
def test_generator_objective_is_finite_with_its_metrics(sets, extra):
  spec, state = setup(tiny(*sets))
  real, styles = fake_batch(spec.cfg)
  rows, shared = ts.generator_draws(spec, jax.random.key(0), styles)
  batch = {"real": real, "styles": styles, "rows": rows}
  loss, metrics = jax.jit(lambda g, d: ts.generator_objective(g, d, batch, shared, spec))(
    state.g_params, state.d_params
  )
  assert set(metrics) == G_KEYS | extra
  assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize(
  "loss,sets,weight",
  [
    ("wgan-gp", (), 10.0),
    ("hinge", (), 0.0),
    ("lsgan", (), 0.0),
    ("nonsaturating", (), 0.0),
    ("hinge", ("optim.gp_weight=5",), 5.0),
    ("wgan-gp", ("optim.gp_weight=0",), 0.0),
  ],
)
def test_gradient_penalty_weight_is_the_loss_own_unless_set(loss, sets, weight):
  requested = apply_overrides(preset("tiny"), [f"optim.loss={loss}", *sets])
  cfg = requested.validate()
  assert cfg.optim.gp_weight == weight  # recorded in the config the run writes
  assert cfg.to_dict()["optim"]["gp_weight"] == weight
  assert cfg.validate() is cfg
  # The step resolves the weight itself for a config that was never validated.
  for c in (cfg, requested):
    spec, state = setup(c)
    total, metrics = critic_loss(spec, state)
    if weight:
      assert float(metrics["d/gp"]) > 0
      want = metrics["d/adv"] + weight * metrics["d/gp"]
      assert float(total) == pytest.approx(float(want), rel=1e-5)
    else:
      assert float(metrics["d/gp"]) == 0.0
      assert float(total) == float(metrics["d/adv"])


def test_critic_updates_change_only_the_critic():
  cfg = tiny("model.num_styles=3")
  spec, state = setup(cfg)
  real, styles = fake_batch(cfg, n=cfg.optim.n_critic)
  before = jax.tree.map(np.asarray, state)
  fn = jax.jit(lambda s, r, y: ts.critic_updates(s, r, y, jax.random.key(1), spec))
  after, metrics = fn(state, real, styles)
  for name in ("step", "g_params", "g_opt", "ema_params"):
    assert_trees_equal(getattr(before, name), getattr(after, name))
  assert_changed(before.d_params, after.d_params)
  assert int(after.d_opt[0].count) == cfg.optim.n_critic  # one Adam step per critic update
  assert {"d/loss", "d/grad_norm"} | D_KEYS <= set(metrics)
  assert all(np.shape(v) == () for v in metrics.values())  # means over the critic updates


def test_generator_update_changes_only_the_generator():
  cfg = tiny("model.num_styles=3")
  spec, state = setup(cfg)
  real, styles = fake_batch(cfg)
  before = jax.tree.map(np.asarray, state)
  fn = jax.jit(lambda s, r, y: ts.generator_update(s, r, y, jax.random.key(1), spec))
  after, metrics = fn(state, real, styles)
  for name in ("step", "d_params", "d_opt", "ema_params"):
    assert_trees_equal(getattr(before, name), getattr(after, name))
  assert_changed(before.g_params, after.g_params)
  assert int(after.g_opt[0].count) == 1
  assert set(metrics) == {"g/loss", "g/grad_norm"} | G_KEYS


def test_ema_update_formula():
  ema, params = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
  # Warm-up: d = min(decay, (1 + t) / (10 + t)) = 0.1 at t = 0.
  out = ts.ema_update(ema, params, jnp.array(0), 0.999)
  np.testing.assert_allclose(out["w"], 0.9, rtol=1e-6)
  out = ts.ema_update(ema, params, jnp.array(10**6), 0.5)
  np.testing.assert_allclose(out["w"], 0.5, rtol=1e-6)


def test_train_step_is_critic_updates_then_generator_update_then_ema():
  cfg = tiny()
  spec, state = setup(cfg)
  real, styles = fake_batch(cfg, n=cfg.optim.n_critic)
  stepped, metrics = jax.jit(lambda s, r, y: ts.train_step(s, r, y, spec))(state, real, styles)
  rng = jax.random.fold_in(jax.random.key(cfg.train.seed + 1), 0)
  d_rng, g_rng = jax.random.split(rng)

  def by_hand(state):
    state, d_metrics = ts.critic_updates(state, real, styles, d_rng, spec)
    state, g_metrics = ts.generator_update(state, real[-1], styles[-1], g_rng, spec)
    ema = ts.ema_update(state.ema_params, state.g_params, state.step, cfg.optim.ema_decay)
    return state.replace(step=state.step + 1, ema_params=ema), {**d_metrics, **g_metrics}

  want, want_metrics = jax.jit(by_hand)(state)
  assert_trees_equal(want, stepped)
  assert set(metrics) == set(want_metrics) | {"d/wdist"}
  assert int(stepped.step) == 1


# ---------------------------------------------------------------------------------------------
# Micro-batches


def _uneven_key(spec, real, draws):
  """A key whose kept-style rows split unevenly between the two halves of the batch."""
  for seed in range(100):
    rows, _ = draws(spec, jax.random.key(seed), real)
    kept = np.asarray(rows["kept"])
    half = len(kept) // 2
    if kept[:half].sum() != kept[half:].sum():
      return jax.random.key(seed)
  raise AssertionError("no uneven split found")


@pytest.mark.parametrize(
  "sets",
  [  # the plain case is the step-level test in test_train_step.py
    (*ACGAN, "optim.uncond_share=0.5"),
    (
      "model.style_groups=2,1",
      "model.num_attributes=1",
      "model.d_cond=acgan",
      "optim.uncond_share=0.5",
    ),
    ("model.aux_discs=msd", "model.aux_width=2", "optim.fm_weight=0"),
  ],
)
@pytest.mark.parametrize("which", ["critic", "generator"])
def test_micro_batches_give_the_full_batch_gradient(sets, which):
  full = tiny("train.batch_size=8", *sets)
  micro = tiny("train.batch_size=8", "compute.grad_accum=2", *sets)
  spec, state = setup(full)
  micro_spec = ts.StepSpec(spec.models, micro)
  real, _ = fake_batch(full)
  m = full.model
  if m.num_attributes:
    styles = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (8, m.cond_dim)), jnp.float32)
  else:
    styles = fake_batch(full)[1]
  if which == "critic":
    objective, draws, args = ts.critic_objective, ts.critic_draws, (state.d_params, state.g_params)
    first = real
  else:
    objective, draws = ts.generator_objective, ts.generator_draws
    args, first = (state.g_params, state.d_params), styles
  key = _uneven_key(spec, first, draws) if full.optim.uncond_share else jax.random.key(0)
  out = {}
  for s in (spec, micro_spec):
    rows, shared = draws(s, key, first)
    batch = {"real": real, "styles": styles, "rows": rows}
    fn = jax.jit(functools.partial(ts.value_and_grad, objective, spec=s))
    out[s.accum] = jax.tree.map(np.asarray, fn(*args, batch, shared))
  (loss, metrics), grads = out[1]
  (micro_loss, micro_metrics), micro_grads = out[2]
  assert float(micro_loss) == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
  for k in set(metrics) - {"g/fm"}:  # g/fm, weighted 0 here, is a batch statistic
    assert float(micro_metrics[k]) == pytest.approx(float(metrics[k]), rel=1e-4, abs=1e-6), k
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(micro_grads), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "sets",
  [
    ("model.aux_discs=msd",),
    ("optim.stft_weight=1",),
    ("model.aux_discs=mpd", "optim.stft_weight=1"),
  ],
)
def test_micro_batches_refuse_the_losses_of_batch_statistics(sets):
  cfg = apply_overrides(preset("tiny"), ["train.batch_size=8", "compute.grad_accum=2", *sets])
  with pytest.raises(ConfigError, match="compute.grad_accum=2"):
    cfg.validate()
  models, _ = ts.build(cfg)
  with pytest.raises(ConfigError, match="compute.grad_accum=2"):
    ts.make_train_step(models, cfg)
  # Without micro-batches, or without those losses, the same settings are fine.
  apply_overrides(cfg, ["compute.grad_accum=1"]).validate()
  apply_overrides(cfg, ["optim.fm_weight=0", "optim.stft_weight=0"]).validate()


def test_the_per_style_spectrum_groups_the_rows_by_their_label_entries():
  cfg = tiny(
    "model.num_styles=3",
    "optim.stft_weight=1",
    "optim.stft_by_style=true",
    "optim.uncond_share=0.5",
  )
  m, o = cfg.model, cfg.optim
  vec = jnp.eye(m.cond_dim)[jnp.arange(4) % m.cond_dim]
  kept = jnp.array([1.0, 0.0, 1.0, 1.0])
  groups = ts.spectrum_groups(m, o, vec, kept)
  np.testing.assert_array_equal(groups, vec[:, : sum(m.groups)] * kept[:, None])
  assert ts.spectrum_groups(m, dataclasses.replace(o, stft_by_style=False), vec, kept) is None


def test_r1_is_its_weight_times_the_penalty_on_due_updates_only():
  cfg = tiny("optim.loss=nonsaturating", "optim.r1_weight=2", "optim.r1_every=4")
  spec, state = setup(cfg)
  real, styles = fake_batch(cfg)
  rows, shared = ts.critic_draws(spec, jax.random.key(0), real, update=8)
  batch = {"real": real, "styles": styles, "rows": rows}
  fn = jax.jit(lambda d, g, sh: ts.critic_objective(d, g, batch, sh, spec))
  total, metrics = fn(state.d_params, state.g_params, shared)
  assert bool(shared.r1_due) and float(metrics["d/r1"]) > 0
  # weight 2 / 2, times the 4 updates it stands for
  want = metrics["d/adv"] + 0.5 * 2.0 * 4 * metrics["d/r1"]
  assert float(total) == pytest.approx(float(want), rel=1e-5)
  off = shared._replace(r1_due=jnp.asarray(False))
  total, metrics = fn(state.d_params, state.g_params, off)
  assert float(metrics["d/r1"]) == 0.0 and float(total) == float(metrics["d/adv"])


def test_lazy_r1_is_due_on_every_kth_update_of_the_run():
  assert [bool(ts.r1_due(jnp.asarray(u), 3)) for u in range(7)] == [1, 0, 0, 1, 0, 0, 1]
  cfg = tiny("optim.loss=nonsaturating", "optim.r1_weight=1", "optim.r1_every=4")  # n_critic 2
  spec, state = setup(cfg)
  real, styles = fake_batch(cfg, n=cfg.optim.n_critic)
  fn = jax.jit(lambda s, r, y: ts.critic_updates(s, r, y, jax.random.key(1), spec)[1]["d/r1"])
  # Step t runs D updates 2t and 2t + 1: step 1 (updates 2, 3) has none due, step 2 (4, 5) one.
  assert float(fn(state.replace(step=jnp.asarray(1, jnp.int32)), real, styles)) == 0.0
  assert float(fn(state.replace(step=jnp.asarray(2, jnp.int32)), real, styles)) > 0.0
