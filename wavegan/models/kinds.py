"""The registry of model kinds: what `model.kind` selects, decided here and nowhere else.

A kind is one object: its generator and critic classes, how a real clip becomes what the critic reads,
how the generator's output becomes audio, which corpus statistics it needs (measured once per corpus
and kept with the run and its exported model files) and the config combinations it refuses. Code
elsewhere looks the kind up once (`kind_of`) and calls these; a new kind is one entry in `KINDS`.

Statistics travel as the JSON-ready dict the run stores (`{"mean": [...], "std": [...]}`, or None for
a kind that needs none); `arrays` turns them into float32 device arrays for the compiled functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegan import dsp
from wavegan.config import Config, ConfigError, ModelConfig
from wavegan.models import context, phase, specgan, waveform

Stats = Mapping[str, Any]  # as stored with the run: lists of floats per name
Arrays = dict[str, jax.Array]


def arrays(stats: Stats | None) -> Arrays:
  """A run's statistics as float32 arrays (empty for a kind that needs none)."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in (stats or {}).items()}


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """One model kind.

  Attributes:
    name: the value of `model.kind`.
    generator: the generator class, `cls(model: ModelConfig, *, rngs)`; called as
      `g(z [B, latent], style)`.
    critic: the critic class, `cls(model, *, rngs)`; called as `d(x, style, rng)`.
    critic_input: `(audio [B, T, C], stats arrays, model) -> x`, a real clip as the critic reads it.
    to_audio: `(generator output, stats arrays, model) -> audio [B, T, C]`.
    critic_ndim: rank of what the critic reads (3: audio [B, T, C]; 4: images [B, F, K, C]).
    statistics: the name the run stores the corpus statistics under (e.g. "spec_moments"), or None.
    measure: `(batches of audio [N, T, C], model) -> stats`, for a kind with statistics.
    statistics_file: `(model) -> str`, the file-name stem the statistics of a corpus are cached
      under; it names every model setting they depend on (SpecGAN: "stft-256-128").
    check: `(config) -> None`, raising `ConfigError` for what this kind cannot train.
    placements: `(model) -> context.Placements`, the positions of G's and D's hidden maps (where
      `model.attention` can place a block).
  """

  name: str
  generator: type
  critic: type
  critic_input: Callable[[jax.Array, Arrays, ModelConfig], jax.Array]
  to_audio: Callable[[jax.Array, Arrays, ModelConfig], jax.Array]
  critic_ndim: int = 3
  statistics: str | None = None
  measure: Callable[[Iterable[np.ndarray], ModelConfig], dict[str, list[float]]] | None = None
  statistics_file: Callable[[ModelConfig], str] | None = None
  check: Callable[[Config], None] = lambda cfg: None
  placements: Callable[[ModelConfig], context.Placements] = waveform.placements

  def needs(self, stats: Stats | None) -> Arrays:
    """`stats` as arrays; refuses a kind with statistics given none."""
    if self.statistics is not None and not stats:
      raise ConfigError(f"a {self.name} model needs its corpus statistics ({self.statistics})")
    return arrays(stats)


def _identity(x: jax.Array, stats: Arrays, model: ModelConfig) -> jax.Array:
  return x


def _with_moments(
  fn: Callable[..., jax.Array],
) -> Callable[[jax.Array, Arrays, ModelConfig], jax.Array]:
  """`fn(x, mean, std, model)` as a kind's `(x, stats arrays, model)` conversion."""
  return lambda x, stats, model: fn(x, stats["mean"], stats["std"], model)


def _as_dict(
  fn: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> Callable[..., dict[str, list[float]]]:
  """`fn(batches, model) -> (mean, std)` as a kind's `measure`, JSON-ready."""
  return lambda batches, model: dsp.moments_to_dict(*fn(batches, model))


def _spec_statistics_file(model: ModelConfig) -> str:
  return f"stft-{model.n_fft}-{model.hop}"


def _planes_statistics_file(model: ModelConfig) -> str:
  return f"{model.kind}-{model.n_fft}-{model.hop}"


def _spec_check(cfg: Config) -> None:
  """What the 2-D spectral kinds (specgan, complex, ifspec) cannot train."""
  m = cfg.model
  bins, frames = m.n_fft // 2, m.slice_len // max(m.hop, 1)
  if bins % 32 or frames % 32 or m.slice_len % max(m.hop, 1):
    raise ConfigError(
      f"model.kind={m.kind} needs n_fft // 2 ({bins}) and slice_len // hop "
      f"({m.slice_len}/{m.hop}) to be multiples of 32"
    )
  if m.aux_names:
    raise ConfigError("model.aux_discs are waveform discriminators: use them with kind=wavegan")
  if cfg.optim.stft_weight > 0:
    raise ConfigError(
      "optim.stft_weight is a waveform loss: use it with model.kind=wavegan, or set "
      "optim.stft_weight=0 (the demo and large presets use it)"
    )
  waveform_only = {
    "model.g_upsample": m.g_upsample != "transposed",
    "model.mbstd_group": m.mbstd_group > 0,
    "model.spectral_norm": m.spectral_norm,
    "augment": cfg.augment.enabled,
  }
  for key, used in waveform_only.items():
    if used:
      raise ConfigError(f"{key} is a waveform model's option: use it with model.kind=wavegan")


KINDS: dict[str, ModelKind] = {
  "wavegan": ModelKind(
    name="wavegan",
    generator=waveform.Generator,
    critic=waveform.Discriminator,
    critic_input=_identity,
    to_audio=_identity,
  ),
  "specgan": ModelKind(
    name="specgan",
    generator=specgan.SpecGenerator,
    critic=specgan.SpecDiscriminator,
    critic_input=_with_moments(specgan.spec_features),
    to_audio=_with_moments(specgan.spec_to_waveform),
    critic_ndim=4,
    statistics="spec_moments",
    measure=_as_dict(specgan.audio_moments),
    statistics_file=_spec_statistics_file,
    check=_spec_check,
    placements=specgan.placements,
  ),
  **{
    name: ModelKind(
      name=name,
      generator=phase.PlanesGenerator,
      critic=phase.PlanesDiscriminator,
      critic_input=_with_moments(phase.features),
      to_audio=_with_moments(phase.to_waveform),
      critic_ndim=4,
      statistics="spec_moments",
      measure=_as_dict(phase.plane_moments),
      statistics_file=_planes_statistics_file,
      check=_spec_check,
      placements=specgan.placements,
    )
    for name in ("complex", "ifspec")
  },
}


def kind_of(model: ModelConfig) -> ModelKind:
  """The registered kind of `model.kind`; a `ConfigError` naming the valid ones otherwise."""
  try:
    return KINDS[model.kind]
  except KeyError:
    raise ConfigError(f"model.kind={model.kind!r}: must be one of {sorted(KINDS)}") from None


def check_model(cfg: Config) -> None:
  """The checks of the model kind and of where `model.attention` places its blocks."""
  kind = kind_of(cfg.model)
  kind.check(cfg)
  context.check_placements(cfg.model, kind.placements(cfg.model))


def check(cfg: Config) -> Config:
  """`cfg` after the checks of its model kind (the generic ones are `Config.validate`) and of the
  memory its attention blocks need at the run's batch (`context.check_memory`)."""
  check_model(cfg)
  context.check_memory(cfg, kind_of(cfg.model).placements(cfg.model))
  return cfg


def abstract_generator(model: ModelConfig) -> tuple[Any, Any]:
  """The generator's graph definition and its parameters as a pure dict of `jax.ShapeDtypeStruct`.

  Nothing is computed: the layout in which runs' checkpoints and exported model files hold the
  generator's parameters.

  Raises:
    ConfigError: `model.kind` is unknown, or the kind refuses the model's settings.
  """
  kind = kind_of(model)
  check_model(Config(model=model))  # not the memory: a trained model is read at any batch
  abstract = nnx.eval_shape(lambda: kind.generator(model, rngs=nnx.Rngs(0)))
  graph, params = nnx.split(abstract, nnx.Param)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(params))
  return graph, shapes
