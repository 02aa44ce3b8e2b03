"""The named starting points of a run (`--preset`): tiny for tests, demo for a laptop, the paper's."""

from __future__ import annotations

from wavegan.config import (
  Config,
  ConfigError,
  DataConfig,
  EvalConfig,
  ModelConfig,
  OptimConfig,
  TrainConfig,
)

PRESETS: dict[str, Config] = {
  # Seconds on a CPU: for tests and smoke runs; sounds like nothing.
  "tiny": Config(
    model=ModelConfig(dim=4, latent_dim=16, style_dim=8),
    data=DataConfig(builtin_per_class=4),
    optim=OptimConfig(n_critic=2, ema_decay=0.9),
    train=TrainConfig(
      steps=4, batch_size=4, log_every=1, checkpoint_every=2, preview_every=2, preview_per_style=1
    ),
    eval=EvalConfig(clips=32, classifier_steps=40, classifier_width=4),
  ),
  # Minutes on a laptop CPU: a small model that learns the built-in drum styles.
  "demo": Config(
    model=ModelConfig(dim=16, style_dim=16),
    data=DataConfig(builtin_per_class=64),
    optim=OptimConfig(ema_decay=0.99),
    # ~0.5 s per step on 2 CPU cores: about 10 minutes.
    train=TrainConfig(
      steps=1200,
      batch_size=16,
      log_every=10,
      checkpoint_every=100,
      preview_every=200,
      preview_per_style=4,
    ),
    eval=EvalConfig(every=200),
  ),
  # The paper's model and recipe (d=64, 16384 samples, batch 64).
  "paper": Config(),
}


def preset(name: str) -> Config:
  """The config of preset `name` as written (validated after any overrides, by the caller).

  Args:
    name: one of PRESETS.

  Returns:
    Its config.

  Raises:
    ConfigError: an unknown name; the message lists the valid ones.
  """
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; valid: {sorted(PRESETS)}")
  return PRESETS[name]
