"""Long-range context (self-attention, recurrence) and style-aware extra critics."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wavegan.config import SLICE_LENS, Config, ConfigError, ModelConfig, TrainConfig
from wavegan.models import context, critics, kinds
from wavegan.presets import preset
from wavegan.training import step as ts

KINDS = ("wavegan", "specgan")


def model(kind="wavegan", **kw):
  base = {"dim": 4, "latent_dim": 8, "style_dim": 4, "num_styles": 3, "kind": kind}
  return ModelConfig(**{**base, **kw})


def networks(cfg, seed=0):
  kind = kinds.kind_of(cfg)
  g = kind.generator(cfg, rngs=nnx.Rngs(seed))
  d = kind.critic(cfg, rngs=nnx.Rngs(seed + 1))
  return g, d


def open_gates(module):
  """Every context block's gate set to 1 (the block then changes its input)."""
  for _, node in nnx.iter_graph(module):
    if isinstance(node, (context.SelfAttention, context.Recurrent)):
      node.gate[...] = jnp.ones(())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slice_len", SLICE_LENS)
@pytest.mark.parametrize("recurrent", ["gru", "lstm"])
def test_shapes_at_every_length_and_kind(kind, slice_len, recurrent):
  cfg = model(kind, slice_len=slice_len)
  places = kinds.kind_of(cfg).placements(cfg)
  # a block where G's second map is and where D's second-to-last is: both present in either
  cfg = dataclasses.replace(cfg, attention=(places.g[1], places.d[-2]), recurrent=recurrent)
  kinds.check_model(Config(model=cfg))
  kind_ = kinds.kind_of(cfg)
  g = nnx.eval_shape(lambda: kind_.generator(cfg, rngs=nnx.Rngs(0)))
  d = nnx.eval_shape(lambda: kind_.critic(cfg, rngs=nnx.Rngs(1)))
  assert sum(b is not None for b in g.attention) >= 1
  assert sum(b is not None for b in d.attention) >= 1
  assert isinstance(g.recurrent, context.Recurrent) and isinstance(d.recurrent, context.Recurrent)
  z = jax.ShapeDtypeStruct((2, cfg.latent_dim), jnp.float32)
  style = jax.ShapeDtypeStruct((2,), jnp.int32)
  gg, gs = nnx.split(g)
  out = jax.eval_shape(lambda s, z, y: nnx.merge(gg, s)(z, y), gs, z, style)
  if kind == "wavegan":
    assert out.shape == (2, slice_len, 1)
  else:
    assert out.shape == (2, slice_len // cfg.hop, cfg.n_fft // 2, 1)
  dg, ds = nnx.split(d)
  logits = jax.eval_shape(
    lambda s, x, y: nnx.merge(dg, s)(x, y, jax.random.key(0)),
    ds,
    jax.ShapeDtypeStruct(out.shape, jnp.float32),
    style,
  )
  assert logits.shape == (2,)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_gates_are_the_identity_at_init(kind):
  plain = model(kind)
  places = kinds.kind_of(plain).placements(plain)
  extended = dataclasses.replace(plain, attention=(places.g[1], places.g[2]), recurrent="gru")
  z = jax.random.uniform(jax.random.key(3), (2, plain.latent_dim), minval=-1, maxval=1)
  style = jnp.array([0, 2])
  g0, d0 = networks(plain)
  g1, d1 = networks(extended)
  x0, x1 = g0(z, style), g1(z, style)
  np.testing.assert_array_equal(np.asarray(x0), np.asarray(x1))
  key = jax.random.key(4)
  np.testing.assert_array_equal(np.asarray(d0(x0, style, key)), np.asarray(d1(x0, style, key)))
  # ... and the blocks are live: with their gates open the outputs change
  open_gates(g1)
  open_gates(d1)
  assert not np.allclose(np.asarray(g1(z, style)), np.asarray(x0))
  assert not np.allclose(np.asarray(d1(x0, style, key)), np.asarray(d0(x0, style, key)))


@pytest.mark.parametrize("block", ["attention", "gru", "lstm"])
def test_every_position_reads_the_whole_sequence(block):
  rngs = nnx.Rngs(0)
  if block == "attention":
    layer = context.SelfAttention(8, 2, rngs=rngs)
  else:
    layer = context.Recurrent(8, block, rngs=rngs)
  open_gates(layer)
  x = jax.random.normal(jax.random.key(1), (2, 16, 8))
  y = layer(x)
  assert y.shape == x.shape and y.dtype == x.dtype
  # changing the last step changes the first step's output (and the reverse): no local window
  y_last = layer(x.at[:, -1].add(1.0))
  y_first = layer(x.at[:, 0].add(1.0))
  assert not np.allclose(np.asarray(y[:, 0]), np.asarray(y_last[:, 0]))
  assert not np.allclose(np.asarray(y[:, -1]), np.asarray(y_first[:, -1]))


def test_attention_gradients_in_bfloat16_at_a_long_map():
  # XLA:CPU aborted compiling this gradient when the attention itself ran in bfloat16
  layer = context.SelfAttention(8, 4, rngs=nnx.Rngs(0))
  graph, state = nnx.split(layer)
  state = jax.tree.map(lambda v: v.astype(jnp.bfloat16), state)
  x = jax.random.normal(jax.random.key(0), (4, 1024, 8)).astype(jnp.bfloat16)

  def total(state, x):
    return jnp.sum(nnx.merge(graph, state)(x).astype(jnp.float32))

  d_state, d_x = jax.jit(jax.grad(total, argnums=(0, 1)))(state, x)
  assert d_x.dtype == jnp.bfloat16
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves((d_state, d_x)))


def test_two_d_maps_are_read_as_positions():
  layer = context.SelfAttention(8, 4, rngs=nnx.Rngs(0))
  open_gates(layer)
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
  y = layer(x)
  np.testing.assert_allclose(
    np.asarray(y.reshape(2, 16, 8)), np.asarray(layer(x.reshape(2, 16, 8))), rtol=1e-6
  )


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_and_reach_the_blocks(kind):
  plain = model(kind)
  places = kinds.kind_of(plain).placements(plain)
  cfg = dataclasses.replace(plain, attention=(places.g[2],), recurrent="lstm")
  g, d = networks(cfg)  # gates at 0: the blocks' own weights get no gradient yet, the gates do
  z = jax.random.uniform(jax.random.key(3), (2, cfg.latent_dim), minval=-1, maxval=1)
  style = jnp.array([0, 1])

  @nnx.jit
  def gradients(g, d):
    loss = lambda g, d: jnp.mean(d(g(z, style), style, jax.random.key(0)))  # noqa: E731
    return nnx.grad(loss, argnums=(0, 1))(g, d)

  grads = gradients(g, d)
  leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
  assert leaves and all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)
  for net in grads:
    for path, node in nnx.iter_graph(net):
      if isinstance(node, (context.SelfAttention, context.Recurrent)):
        assert float(jnp.abs(node.gate[...])) > 0, path


def test_training_step_compiles_once_with_context_and_style_aware_critics():
  cfg = preset("tiny")
  sets = {
    "num_styles": 3,
    "attention": (64, 256),
    "recurrent": "gru",
    "aux_discs": ("msd",),
    "aux_width": 2,
    "aux_cond": "acgan",
  }
  compute = dataclasses.replace(cfg.compute, dtype="bfloat16")
  model = dataclasses.replace(cfg.model, **sets)
  cfg = dataclasses.replace(cfg, model=model, compute=compute).validate()
  kinds.check(cfg)
  models, state = ts.build(cfg)
  state = jax.device_put(state, NamedSharding(ts.data_mesh(), P()))
  step = ts.make_train_step(models, cfg, ts.data_mesh())
  rng = np.random.default_rng(0)
  n, b = cfg.optim.n_critic, cfg.train.batch_size
  real = jnp.asarray(rng.uniform(-1, 1, (n, b, cfg.model.slice_len, 1)).astype(np.float32))
  styles = jnp.asarray(rng.integers(0, 3, (n, b)).astype(np.int32))
  state, metrics = step(state, real, styles)
  state, metrics = step(state, real, styles)
  assert step._cache_size() == 1
  assert {"d/aux_ac", "g/aux_ac"} <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(state))
  gates = [state.g_params["attention"][i]["gate"] for i in state.g_params["attention"]]
  assert gates and all(float(gate) != 0.0 for gate in gates)  # the blocks learn


def test_placements_that_no_map_has_are_refused():
  with pytest.raises(ConfigError, match="no feature map has 1000 positions; G's have 16, 64"):
    kinds.check_model(Config(model=model(attention=(1000,))))
  kinds.check_model(Config(model=model(attention=(0,))))  # 0 is off
  assert model(attention=(0, 256, 256)).attention_at == (256,)


def test_memory_refusal_names_the_figure():
  cfg = Config(model=model(attention=(1024,)), train=TrainConfig(batch_size=64))
  places = kinds.kind_of(cfg.model).placements(cfg.model)
  need = 2 * context.attention_bytes(64, 4, 1024)  # one block in G, one in D
  context.check_memory(cfg, places, limit=need)  # fits exactly
  with pytest.raises(ConfigError) as err:
    context.check_memory(cfg, places, limit=need - 1)
  message = str(err.value)
  assert "\n" not in message
  assert "4 x batch 64 x 4 heads x 1024^2 float32 = 4.0 GiB per block" in message
  assert "at most 256 positions fits" in message


def test_memory_refusal_from_the_command_line(tmp_path):
  # 4 x 65536 x 4 x 4096^2 x 4 bytes per block: 64 TiB, more than any machine has
  cmd = [sys.executable, "-m", "wavegan.cli", "train", "--preset", "tiny"]
  cmd += ["--workdir", str(tmp_path / "run"), "--set", "model.attention=4096"]
  cmd += ["--set", "train.batch_size=65536"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "the attention matrices need" in lines[0], out.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["msd", "mpd", "mrstft"])
def test_projection_heads_make_extra_critics_hear_the_style(name):
  x = jax.random.normal(jax.random.key(0), (2, 1024, 1)) * 0.1
  styles = jnp.eye(3)[jnp.array([0, 1])]
  plain = critics.AuxDiscriminators((name,), 1, 2, rngs=nnx.Rngs(0))
  aware = critics.AuxDiscriminators((name,), 1, 2, rngs=nnx.Rngs(0), cond_dim=3, cond="projection")
  a, b = plain(x), aware(x, styles)
  assert [v.shape for v in a.logits] == [v.shape for v in b.logits]
  other = aware(x, styles[::-1])
  assert all(not np.allclose(np.asarray(u), np.asarray(v)) for u, v in zip(b.logits, other.logits))
  assert b.classes == ()
  # rows trained without a style (zero vectors) get no projection term
  for u, v in zip(aware(x).logits, aware(x, jnp.zeros_like(styles)).logits):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_acgan_heads_name_the_style_per_sub_critic():
  x = jax.random.normal(jax.random.key(0), (2, 1024, 1)) * 0.1
  aware = critics.AuxDiscriminators(
    ("msd", "mpd"), 1, 2, rngs=nnx.Rngs(0), cond_dim=5, cond="acgan"
  )
  out = aware(x, jnp.zeros((2, 5)))
  assert len(out.classes) == len(out.logits) == 3 + len(critics.DEFAULT_PERIODS)
  assert all(c.shape == (2, 5) for c in out.classes)


def test_context_options_are_validated():
  for bad in ({"recurrent": "rnn"}, {"aux_cond": "both"}, {"attention": (-1,)}):
    with pytest.raises(ConfigError):
      Config(model=model(**bad)).validate()
