"""Augmentation of what the critic reads: each op against numpy, gradients, p, ADA, the step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from checkpoints import Checkpointer
from wavegan.config import AUGMENTS, apply_overrides
from wavegan.presets import preset
from wavegan.training import augment as aug
from wavegan.training import loop
from wavegan.training import step as ts

B, T, C = 8, 256, 2
KEY = jax.random.key(3)
OP_FNS = {
  "gain": aug.gain,
  "polarity": aug.polarity,
  "shift": aug.shift,
  "noise": aug.noise,
  "mask": aug.mask,
}


def audio(b=B, t=T, c=C, seed=0):
  """Audio [b, t, c] without zeros, so a zeroed sample is the op's doing."""
  x = np.random.default_rng(seed).uniform(0.1, 1.0, (b, t, c))
  return (x * np.sign(np.random.default_rng(seed + 1).uniform(-1, 1, (b, t, c)))).astype(np.float32)


def tiny(*sets):
  return apply_overrides(preset("tiny"), list(sets)).validate()


def test_ops_are_the_configs_augmentations():
  assert aug.OPS == AUGMENTS and set(OP_FNS) == set(aug.OPS)


@pytest.mark.parametrize("name", aug.OPS)
def test_each_op_keeps_shape_and_dtype_p0_is_the_input_p1_changes_it(name):
  x = jnp.asarray(audio())
  out0 = OP_FNS[name](x, KEY, 0.0)
  np.testing.assert_array_equal(np.asarray(out0), np.asarray(x))
  out1 = OP_FNS[name](x, KEY, 1.0)
  assert out1.shape == x.shape and out1.dtype == x.dtype
  assert not np.array_equal(np.asarray(out1), np.asarray(x))
  assert OP_FNS[name](x.astype(jnp.bfloat16), KEY, 1.0).dtype == jnp.bfloat16
  # The single op is `augment` with that op alone.
  np.testing.assert_array_equal(np.asarray(aug.augment(x, KEY, 1.0, (name,))), np.asarray(out1))


# numpy references, one clip at a time, from the drawn parameters


def np_gain(x, d):
  return x * (10.0 ** (np.asarray(d["db"]) / 20.0))[:, None, None]


def np_shift(x, d):
  y = np.zeros_like(x)
  for i, s in enumerate(np.asarray(d["offset"])):
    if s >= 0:
      y[i, s:] = x[i, : x.shape[1] - s]
    else:
      y[i, :s] = x[i, -s:]
  return y


def np_noise(x, d):
  rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=(1, 2)) + aug.RMS_EPS)
  return x + (np.asarray(d["ratio"]) * rms)[:, None, None] * np.asarray(d["noise"])


def np_mask(x, d):
  y = x.copy()
  for i, (s, n) in enumerate(zip(np.asarray(d["start"]), np.asarray(d["length"]), strict=True)):
    y[i, s : s + n] = 0.0
  return y


NP_OPS = {"gain": np_gain, "polarity": lambda x, d: -x, "shift": np_shift, "noise": np_noise}
NP_OPS["mask"] = np_mask


@pytest.mark.parametrize("name", aug.OPS)
def test_each_op_at_p1_is_its_numpy_reference(name):
  x = audio()
  draws = aug.draw(KEY, B, T, C, (name,))
  got = np.asarray(OP_FNS[name](jnp.asarray(x), KEY, 1.0))
  np.testing.assert_allclose(got, NP_OPS[name](x, draws[name]), rtol=1e-6, atol=1e-6)


def test_gain_is_a_constant_ratio_within_six_db_per_clip():
  x = audio()
  ratio = np.asarray(aug.gain(jnp.asarray(x), KEY, 1.0)) / x  # [B, T, C]
  per_clip = ratio[:, :1, :1]
  np.testing.assert_allclose(ratio, np.broadcast_to(per_clip, ratio.shape), rtol=1e-6)
  db = 20 * np.log10(per_clip.ravel())
  assert np.all(np.abs(db) <= 6.0 + 1e-5) and np.ptp(db) > 1.0


def test_polarity_is_exactly_minus_x():
  x = audio()
  np.testing.assert_array_equal(np.asarray(aug.polarity(jnp.asarray(x), KEY, 1.0)), -x)


def test_mask_zeros_one_contiguous_span_of_at_most_an_eighth():
  x = audio(b=64)
  y = np.asarray(aug.mask(jnp.asarray(x), KEY, 1.0))
  lengths = []
  for i in range(64):
    zeroed = np.flatnonzero(np.all(y[i] == 0, axis=-1))
    np.testing.assert_array_equal(np.delete(y[i], zeroed, 0), np.delete(x[i], zeroed, 0))
    if zeroed.size:
      assert zeroed[-1] - zeroed[0] + 1 == zeroed.size  # contiguous
    lengths.append(zeroed.size)
  assert max(lengths) <= T // 8 and len(set(lengths)) > 10


def test_shift_is_a_zero_filled_copy_within_a_sixteenth():
  x = audio(b=64)
  y = np.asarray(aug.shift(jnp.asarray(x), KEY, 1.0))
  offsets = set()
  for i in range(64):
    (s,) = [
      s
      for s in range(-T // 16, T // 16 + 1)
      if np.array_equal(y[i], np_shift(x[i : i + 1], {"offset": [s]})[0])
    ]
    offsets.add(s)
  assert min(offsets) < 0 < max(offsets)


def test_noise_is_relative_to_the_clips_level():
  x = audio(b=64) * np.geomspace(1e-3, 1, 64)[:, None, None].astype(np.float32)
  y = np.asarray(aug.noise(jnp.asarray(x), KEY, 1.0))
  snr = 10 * np.log10(np.mean(x**2, axis=(1, 2)) / np.mean((y - x) ** 2, axis=(1, 2)))
  assert np.all(snr > 20 - 1.0)  # ratio <= 0.1 of the RMS, up to the noise's own spread
  assert np.all(np.isfinite(np.asarray(aug.noise(jnp.zeros((2, T, C)), KEY, 1.0))))


def test_all_ops_compose_in_their_fixed_order():
  x = audio()
  draws = aug.draw(KEY, B, T, C)
  want = x
  for name in ("gain", "polarity", "shift", "noise", "mask"):
    want = NP_OPS[name](want, draws[name])
  got = np.asarray(aug.augment(jnp.asarray(x), KEY, 1.0))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # An op's draws are its own: choosing fewer ops leaves them as they were.
  few = aug.draw(KEY, B, T, C, ("shift",))
  np.testing.assert_array_equal(few["shift"]["offset"], draws["shift"]["offset"])


def grad_of_sum(x, name):
  return np.asarray(jax.grad(lambda v: jnp.sum(aug.augment(v, KEY, 1.0, (name,))))(jnp.asarray(x)))


def test_gradients_are_the_linear_maps_transposed():
  x = audio()
  ones = np.ones_like(x)
  draws = aug.draw(KEY, B, T, C)
  np.testing.assert_array_equal(grad_of_sum(x, "polarity"), -ones)
  np.testing.assert_allclose(grad_of_sum(x, "gain"), np_gain(ones, draws["gain"]), rtol=1e-6)
  np.testing.assert_array_equal(grad_of_sum(x, "mask"), np_mask(ones, draws["mask"]))
  # x[t] lands at t + s when that is inside the clip: the shift back of the ones.
  back = {"offset": -np.asarray(draws["shift"]["offset"])}
  np.testing.assert_array_equal(grad_of_sum(x, "shift"), np_shift(ones, back))
  g = jax.grad(lambda v: jnp.sum(aug.augment(v, KEY, 1.0) ** 2))(jnp.asarray(x))
  assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)
  silent = jax.grad(lambda v: jnp.sum(aug.augment(v, KEY, 1.0)))(jnp.zeros((B, T, C)))
  assert np.all(np.isfinite(np.asarray(silent)))


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_the_share_of_clips_augmented_is_p(p):
  n = 20000
  x = jnp.ones((n, 4, 1))
  changed = np.asarray(jnp.any(aug.polarity(x, KEY, p) != x, axis=(1, 2)))
  assert abs(changed.mean() - p) < 0.015
  # The ops choose their clips independently: both ops on about p^2 of them.
  both = aug.augment(x, KEY, jnp.asarray(p), ("gain", "polarity"))
  gained = np.asarray(jnp.abs(both[:, 0, 0]) != 1.0)
  flipped = np.asarray(both[:, 0, 0] < 0)
  assert abs((gained & flipped).mean() - p * p) < 0.015


def test_ada_moves_p_up_when_the_critic_is_sure_of_the_reals_and_down_when_not():
  sure = jnp.asarray([3.0, 1.0, 0.5, 2.0, 0.1, -0.2, 4.0, 1.0])  # r = 0.75
  unsure = jnp.asarray([3.0, -1.0, 0.5, -2.0, 0.1, -0.2, 4.0, -1.0])  # r = 0
  r = lambda logits: jnp.mean(jnp.sign(logits))
  p = jnp.asarray(0.5, jnp.float32)
  assert float(aug.ada_update(p, r(sure), 0.6, 100)) == pytest.approx(0.51)
  assert float(aug.ada_update(p, r(unsure), 0.6, 100)) == pytest.approx(0.49)
  assert float(aug.ada_update(p, jnp.asarray(0.6), 0.6, 100)) == 0.5
  assert float(aug.ada_update(jnp.asarray(0.999), r(sure), 0.6, 100)) == 1.0
  assert float(aug.ada_update(jnp.asarray(0.0), r(unsure), 0.6, 100)) == 0.0
  assert aug.ada_update(p, r(sure), 0.6, 100).dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# In the step


def fake_batch(cfg, n=None, seed=0):
  rng = np.random.default_rng(seed)
  lead = () if n is None else (n,)
  real = rng.uniform(-1, 1, (*lead, cfg.train.batch_size, cfg.model.slice_len, 1))
  return jnp.asarray(real, jnp.float32), jnp.zeros((*lead, cfg.train.batch_size), jnp.int32)


def test_the_critic_reads_augmented_clips_and_p0_reads_them_as_they_are():
  off = tiny()
  on = tiny("augment.p=0.5")
  models, state = ts.build(off)
  real, styles = fake_batch(off)
  key = jax.random.key(0)
  losses = {}
  for name, cfg, p in (("off", off, None), ("p0", on, 0.0), ("p1", on, 1.0)):
    spec = ts.StepSpec(models, cfg)
    rows, shared = ts.critic_draws(spec, key, real, aug_p=p)
    assert ("aug_real" in rows) == (name != "off")
    batch = {"real": real, "styles": styles, "rows": rows}
    fn = jax.jit(functools.partial(ts.critic_objective, spec=spec))
    losses[name] = float(fn(state.d_params, state.g_params, batch, shared)[0])
  assert losses["p0"] == losses["off"]  # the other draws are those of a run without augmentation
  assert losses["p1"] != losses["off"]


@pytest.mark.parametrize("which", ["critic", "generator"])
def test_micro_batches_give_the_full_batch_gradient_with_augmentation(which):
  full = tiny("augment.p=0.5")
  micro = tiny("augment.p=0.5", "compute.grad_accum=2")
  models, state = ts.build(full)
  real, styles = fake_batch(full)
  if which == "critic":
    objective, draws, args, first = (
      ts.critic_objective,
      ts.critic_draws,
      (state.d_params, state.g_params),
      real,
    )
  else:
    objective, draws = ts.generator_objective, ts.generator_draws
    args, first = (state.g_params, state.d_params), styles
  out = []
  for cfg in (full, micro):
    spec = ts.StepSpec(models, cfg)
    rows, shared = draws(spec, jax.random.key(0), first)
    batch = {"real": real, "styles": styles, "rows": rows}
    fn = jax.jit(functools.partial(ts.value_and_grad, objective, spec=spec))
    out.append(jax.tree.map(np.asarray, fn(*args, batch, shared)))
  (loss, _), grads = out[0]
  (micro_loss, _), micro_grads = out[1]
  assert float(micro_loss) == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(micro_grads), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def run_step(cfg):
  models, state = ts.build(cfg)
  step = ts.make_train_step(models, cfg)
  return step(state, *fake_batch(cfg, n=cfg.optim.n_critic))


def test_a_step_with_a_fixed_p_keeps_it():
  state, metrics = run_step(tiny("augment.p=0.5"))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["aug/p"]) == 0.5 and float(state.aug_p) == 0.5
  assert "d/sign_real" not in metrics


def test_a_step_with_ada_moves_p_by_its_sign_rule():
  cfg = tiny("optim.loss=nonsaturating", "augment.ada_target=0.6", "augment.p=0.2")
  state, metrics = run_step(cfg)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  r = float(metrics["d/sign_real"])
  assert -1.0 <= r <= 1.0
  want = 0.2 + np.sign(r - 0.6) / cfg.augment.ada_steps
  assert float(state.aug_p) == pytest.approx(want) and float(metrics["aug/p"]) == float(state.aug_p)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoints_keep_p_and_older_ones_without_it_resume_with_the_configs(tmp_path):
  cfg = tiny("augment.p=0.25")
  sharding = NamedSharding(ts.data_mesh(), P())
  _, fresh = ts.build(cfg)
  fresh = jax.device_put(fresh, sharding)
  saved = fresh.replace(aug_p=jnp.asarray(0.75, jnp.float32), step=jnp.asarray(3, jnp.int32))
  old = {k: v for k, v in loop._to_tree(saved).items() if k != "aug_p"}  # the layout before
  for name, tree, want_p in (("new", loop._to_tree(saved), 0.75), ("old", old, 0.25)):
    with Checkpointer(str(tmp_path / name), keep=1, async_save=False) as ck:
      ck.save(3, tree, {"loader": None})
      start, state, _ = loop._restore(ck, cfg, fresh, sharding, "run", lambda _: None)
    assert start == 3 and float(state.aug_p) == want_p, name
    rest = {k: v for k, v in loop._to_tree(state).items() if k != "aug_p"}
    for x, y in zip(jax.tree.leaves(old), jax.tree.leaves(rest), strict=True):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
