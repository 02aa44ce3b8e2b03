"""WaveGAN in JAX + Flax NNX: train style-conditioned audio GANs and render new sounds.

Names are imported on first use, so `from wavegan import Synthesizer` (rendering from an exported
model) does not load the training stack (optax, orbax, grain).
"""

import importlib

_EXPORTS = {
  "PRESETS": "wavegan.presets",
  "Config": "wavegan.config",
  "ConfigError": "wavegan.config",
  "DataConfig": "wavegan.config",
  "EvalConfig": "wavegan.config",
  "ModelConfig": "wavegan.config",
  "OptimConfig": "wavegan.config",
  "TrainConfig": "wavegan.config",
  "apply_overrides": "wavegan.config",
  "preset": "wavegan.presets",
  "Discriminator": "wavegan.models.waveform",
  "Generator": "wavegan.models.waveform",
  "Synthesizer": "wavegan.synthesis.synthesizer",
  "UserError": "wavegan.errors",
  "ResourceError": "wavegan.errors",
  "DiskFullError": "wavegan.errors",
  "NonFiniteError": "wavegan.errors",
  "RenderJob": "wavegan.synthesis.render",
  "read_jobs": "wavegan.synthesis.render",
  "render": "wavegan.synthesis.render",
  "GANState": "wavegan.training.step",
  "build": "wavegan.training.step",
  "make_train_step": "wavegan.training.step",
  "train": "wavegan.training.loop",
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
