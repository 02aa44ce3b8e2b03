"""WaveGAN in JAX + Flax NNX: train style-conditioned audio GANs and render new sounds."""

from wavegan.config import (PRESETS, Config, ConfigError, DataConfig, ModelConfig, OptimConfig,
                            TrainConfig, apply_overrides, preset)
from wavegan.models import Discriminator, Generator
from wavegan.synthesis import Synthesizer
from wavegan.train_step import GANState, build, make_train_step
from wavegan.trainer import train

__all__ = [
    "PRESETS", "Config", "ConfigError", "DataConfig", "Discriminator", "GANState", "Generator",
    "ModelConfig", "OptimConfig", "Synthesizer", "TrainConfig", "apply_overrides", "build",
    "make_train_step", "preset", "train",
]
