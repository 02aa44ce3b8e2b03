"""Every preset validates, builds its networks, and round-trips through dicts, JSON and overrides."""

import dataclasses
import json

import jax
import pytest
from flax import nnx

from wavegan.config import Config, ConfigError, ModelConfig, apply_overrides, section_from_dict
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
  assert cfg.validate() == dataclasses.replace(cfg, optim=cfg.optim.resolved())
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
  if kind != "wavegan" and cfg.optim.stft_weight > 0:  # a waveform loss, refused by name
    with pytest.raises(ConfigError, match="optim.stft_weight=0"):
      kinds.check(cfg.validate())
    cfg = apply_overrides(cfg, ["optim.stft_weight=0"])
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
  text = ",".join(map(str, value)) if isinstance(value, tuple) else value  # lists: "a,b"
  again = apply_overrides(cfg, [f"{section}.{field}={text}"])
  assert again == cfg
  assert type(getattr(getattr(again, section), field)) is type(value)


def test_list_settings_are_lists_in_overrides_dicts_and_json():
  cfg = apply_overrides(
    preset("tiny"),
    ["model.aux_discs=mrstft, msd", "data.label_field=instrument,technique", "data.attributes="],
  )
  assert cfg.model.aux_discs == ("mrstft", "msd") and cfg.model.aux_names == ("mrstft", "msd")
  assert cfg.data.label_field == ("instrument", "technique") and cfg.data.attributes == ()
  on_disk = json.loads(cfg.to_json())
  assert on_disk["model"]["aux_discs"] == ["mrstft", "msd"]
  assert Config.from_dict(on_disk) == cfg
  with pytest.raises(ConfigError, match="style_groups"):
    apply_overrides(preset("tiny"), ["model.style_groups=4,x"])


def test_configs_from_before_list_settings_read_their_comma_strings():
  old = json.loads(preset("tiny").to_json())
  old["model"].update(style_groups="4,3", aux_discs="mrstft,msd", num_styles=7)
  old["data"].update(label_field="instrument,technique", attributes="pitch")
  cfg = Config.from_dict(old)
  assert cfg.model.style_groups == (4, 3) and cfg.model.groups == (4, 3)
  assert cfg.model.aux_discs == ("mrstft", "msd")
  assert cfg.data.label_field == ("instrument", "technique") and cfg.data.attributes == ("pitch",)
  # An exported model file's metadata holds the model section alone, read the same way.
  assert section_from_dict(ModelConfig, old["model"]) == cfg.model
