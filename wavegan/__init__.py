"""WaveGAN in JAX + Flax NNX: train style-conditioned audio GANs and render new sounds.

Names are imported on first use, so `from wavegan import Synthesizer` (rendering from an exported
model) does not load the training stack (optax, orbax, grain).
"""

import importlib

_EXPORTS = {
    "PRESETS": "wavegan.config", "Config": "wavegan.config", "ConfigError": "wavegan.config",
    "DataConfig": "wavegan.config", "EvalConfig": "wavegan.config", "ModelConfig": "wavegan.config",
    "OptimConfig": "wavegan.config", "TrainConfig": "wavegan.config",
    "apply_overrides": "wavegan.config", "preset": "wavegan.config",
    "Discriminator": "wavegan.models", "Generator": "wavegan.models",
    "Synthesizer": "wavegan.synthesis",
    "UserError": "wavegan.errors", "ResourceError": "wavegan.errors",
    "DiskFullError": "wavegan.errors", "NonFiniteError": "wavegan.errors",
    "RenderJob": "wavegan.render", "read_jobs": "wavegan.render", "render": "wavegan.render",
    "GANState": "wavegan.train_step", "build": "wavegan.train_step",
    "make_train_step": "wavegan.train_step",
    "train": "wavegan.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'wavegan' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__():
  return __all__
