"""The registry of model kinds: every kind builds, converts and checks through the same calls."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavegan import cli
from wavegan.config import Config, ConfigError, ModelConfig, OptimConfig, apply_overrides
from wavegan.models import kinds
from wavegan.presets import preset
from wavegan.synthesis import synthesizer
from wavegan.training import loop

BATCH = 2


def tiny(name: str, **kw) -> ModelConfig:
  return ModelConfig(kind=name, dim=2, latent_dim=8, gl_iters=2, **kw)


def statistics(kind: kinds.ModelKind, model: ModelConfig) -> dict | None:
  """The kind's statistics of a little noise, measured as a run measures its corpus."""
  if kind.statistics is None:
    return None
  noise = np.random.default_rng(0).uniform(-0.5, 0.5, (3, model.slice_len, model.channels))
  return kind.measure([noise[:2], noise[2:]], model)


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_every_kind_builds_and_connects_to_audio(name):
  model = tiny(name)
  kind = kinds.kind_of(model)
  assert kind.name == name and kinds.check(Config(model=model)) == Config(model=model)
  stats = statistics(kind, model)
  if stats is not None:  # JSON-ready, as the run and its model files store them
    assert json.loads(json.dumps(stats)) == stats
  arrays = kind.needs(stats)
  assert all(a.dtype == jnp.float32 for a in arrays.values())

  g = kind.generator(model, rngs=nnx.Rngs(0))
  d = kind.critic(model, rngs=nnx.Rngs(1))
  z = jax.random.uniform(jax.random.key(0), (BATCH, model.latent_dim), minval=-1, maxval=1)
  audio = kind.to_audio(g(z), arrays, model)
  assert audio.shape == (BATCH, model.slice_len, model.channels)
  assert bool(jnp.all(jnp.isfinite(audio))) and float(jnp.max(jnp.abs(audio))) <= 1.0

  x = kind.critic_input(audio, arrays, model)
  assert x.ndim == kind.critic_ndim and x.shape[0] == BATCH
  logits = d(x, None, jax.random.key(2))
  assert logits.shape == (BATCH,) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_generator_graph_and_audio_fn_follow_the_kind(name):
  model = tiny(name)
  kind = kinds.kind_of(model)
  graph, shapes = kinds.abstract_generator(model)
  params = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)
  fn = synthesizer.audio_fn(model, graph, statistics(kind, model))
  audio = fn(params, jnp.zeros((BATCH, model.latent_dim)), None)
  assert audio.shape == (BATCH, model.slice_len, model.channels)


@pytest.mark.parametrize("name", [n for n, k in sorted(kinds.KINDS.items()) if k.statistics])
def test_kinds_with_statistics_refuse_none(name):
  model = tiny(name)
  kind = kinds.kind_of(model)
  with pytest.raises(ConfigError, match=kind.statistics):
    kind.needs(None)
  graph, _ = kinds.abstract_generator(model)
  with pytest.raises(ConfigError, match=kind.statistics):
    synthesizer.audio_fn(model, graph, None)


def test_unknown_kind_is_a_config_error_naming_the_valid_ones():
  cfg = Config(model=ModelConfig(kind="vqgan"))
  assert cfg.validate().model is cfg.model  # generic checks only: that the kind is named
  for refuse in (lambda: kinds.kind_of(cfg.model), lambda: kinds.check(cfg)):
    with pytest.raises(ConfigError, match="model.kind='vqgan'") as err:
      refuse()
    assert all(name in str(err.value) for name in kinds.KINDS)
  with pytest.raises(ConfigError, match="vqgan"):
    kinds.abstract_generator(cfg.model)
  with pytest.raises(ConfigError, match="model.kind=''"):
    Config(model=ModelConfig(kind="")).validate()


SPECGAN_REFUSALS = [
  (["model.hop=100"], "multiples of 32"),
  (["model.n_fft=200"], "multiples of 32"),
  (["model.aux_discs=msd"], "aux_discs are waveform discriminators"),
  (["optim.stft_weight=0.5"], "stft_weight is a waveform loss"),
]


@pytest.mark.parametrize("sets,message", SPECGAN_REFUSALS)
@pytest.mark.parametrize("name", ["specgan", "complex", "ifspec"])
def test_kind_checks_refuse_what_the_kind_cannot_train(name, sets, message):
  cfg = apply_overrides(preset("tiny"), [f"model.kind={name}", *sets]).validate()
  with pytest.raises(ConfigError, match=message):
    kinds.check(cfg)
  # The same settings are fine for the waveform model (n_fft and hop are not its).
  wave = apply_overrides(preset("tiny"), sets).validate()
  assert kinds.check(wave) is wave


def test_kind_checks_run_wherever_models_are_built(tmp_path, monkeypatch, capsys):
  bad = apply_overrides(preset("tiny"), ["model.kind=specgan", "model.hop=100"]).validate()
  with pytest.raises(ConfigError, match="multiples of 32"):
    loop.resolve_run(bad, str(tmp_path / "run"), "tiny", ("kick", "snare"))
  with pytest.raises(ConfigError, match="multiples of 32"):
    kinds.abstract_generator(bad.model)
  with pytest.raises(ConfigError, match="stft_weight"):
    kinds.check(Config(model=tiny("specgan"), optim=OptimConfig(stft_weight=1.0)))

  # `wavegan train` refuses before any data is read or any step is run, in one line.
  def never(*args, **kwargs):
    raise AssertionError("training started")

  monkeypatch.setattr(loop, "train", never)
  argv = ["train", "--workdir", str(tmp_path / "cli"), "--preset", "tiny", "--no-progress"]
  argv += ["--set", "model.kind=specgan", "--set", "model.hop=100"]
  assert cli.main(argv) == cli.EXIT_USER_ERROR
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "multiples of 32" in err[0], err
