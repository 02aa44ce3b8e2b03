"""Every preset validates, builds its networks, and round-trips through dicts, JSON and overrides."""

import dataclasses
import json

import jax
import pytest
from flax import nnx

from wavegan.config import Config, ConfigError, apply_overrides
from wavegan.models import kinds
from wavegan.presets import PRESETS, preset

NAMES = sorted(PRESETS)
FIELDS = [
  (section.name, field.name)
  for section in dataclasses.fields(Config)
  for field in dataclasses.fields(getattr(Config(), section.name))
]


@pytest.mark.parametrize("name", NAMES)
def test_preset_loads_and_validates(name):
  cfg = preset(name)
  assert cfg is PRESETS[name]
  assert cfg.validate() is cfg
  assert kinds.check(cfg) is cfg


def test_unknown_preset_names_the_valid_ones():
  with pytest.raises(ConfigError, match="tiny"):
    preset("no-such-preset")


def _abstract_networks(cfg: Config, batch: int = 2) -> tuple[jax.ShapeDtypeStruct, ...]:
  """G and D of `cfg`'s model kind built and run on an abstract trace (shapes only, no FLOPs).

  Returns:
    The shapes of G's output [B, ...] and of D's logits on it [B].
  """
  model = cfg.model
  kind = kinds.kind_of(model)

  def run():
    g = kind.generator(model, rngs=nnx.Rngs(0))
    d = kind.critic(model, rngs=nnx.Rngs(1))
    z = jax.numpy.zeros((batch, model.latent_dim))
    fake = g(z, None)  # what the critic reads: audio [B, T, C] or images [B, F, K, C]
    return fake, d(fake, None, jax.random.key(2))

  return nnx.eval_shape(run)


@pytest.mark.parametrize("kind", sorted(kinds.KINDS))
@pytest.mark.parametrize("name", NAMES)
def test_preset_builds_every_model_kind(name, kind):
  cfg = dataclasses.replace(
    PRESETS[name], model=dataclasses.replace(PRESETS[name].model, kind=kind)
  )
  kinds.check(cfg.validate())
  fake, logits = _abstract_networks(cfg)
  assert fake.ndim == kinds.KINDS[kind].critic_ndim and fake.shape[0] == 2
  assert logits.shape == (2,)


@pytest.mark.parametrize("name", NAMES)
def test_preset_round_trips_through_dict_and_json(name):
  cfg = PRESETS[name]
  assert Config.from_dict(cfg.to_dict()) == cfg
  assert Config.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("section,field", FIELDS, ids=[f"{s}.{f}" for s, f in FIELDS])
@pytest.mark.parametrize("name", NAMES)
def test_every_field_override_round_trips(name, section, field):
  cfg = PRESETS[name]
  value = getattr(getattr(cfg, section), field)
  again = apply_overrides(cfg, [f"{section}.{field}={value}"])
  assert again == cfg
  assert type(getattr(getattr(again, section), field)) is type(value)
