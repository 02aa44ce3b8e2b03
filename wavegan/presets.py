"""The named starting points of a run (`--preset`): tiny for tests, demo and demo-specgan for a
laptop, the paper's, and large (the paper's model with the demo's recipe) for accelerators."""

from __future__ import annotations

import dataclasses

from wavegan.config import (
  Config,
  ConfigError,
  DataConfig,
  EvalConfig,
  ModelConfig,
  OptimConfig,
  TrainConfig,
)

# The training recipe that won at equal compute on the built-in corpus (README, "Training recipes
# at equal compute", which also has where it fails: speech): the non-saturating loss with lazy R1
# (gamma 1, every 4th critic update), one critic update per G update with the critic at 4x G's
# learning rate (TTUR), and G's average spectrogram per style pulled towards the real clips'. The
# paper's WGAN-GP recipe stays the `paper` preset.
RECIPE = OptimConfig(
  loss="nonsaturating",
  r1_weight=1.0,
  r1_every=4,
  n_critic=1,
  d_lr=4e-4,
  stft_weight=1.0,
  stft_by_style=True,
  stft_frames=True,
)

# Minutes on a laptop CPU: a small model that learns the built-in drum styles.
DEMO = Config(
  model=ModelConfig(dim=16, style_dim=16),
  data=DataConfig(builtin_per_class=64),
  optim=dataclasses.replace(RECIPE, ema_decay=0.99),
  # ~0.5 s of CPU per step: about 16 CPU minutes, 9 on 2 cores.
  train=TrainConfig(
    steps=1800,
    batch_size=16,
    log_every=10,
    checkpoint_every=100,
    preview_every=200,
    preview_per_style=4,
  ),
  eval=EvalConfig(every=200),
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
  "demo": DEMO,
  # The demo's model as SpecGAN (log-magnitude STFT, Griffin-Lim) with the recipe but for the
  # spectrogram loss (it reads waveforms): at equal compute the best model kind by every figure on
  # the built-in one-shots; on speech the complex kind is better (README, "Spectral kinds at
  # equal compute"). What `make demo` trains. ~0.58 s of CPU per step: about 16 CPU minutes.
  "demo-specgan": dataclasses.replace(
    DEMO,
    model=dataclasses.replace(DEMO.model, kind="specgan"),
    optim=dataclasses.replace(DEMO.optim, stft_weight=0.0, stft_by_style=False, stft_frames=False),
    train=dataclasses.replace(DEMO.train, steps=1700),
  ),
  # The paper's model and recipe (d=64, 16384 samples, batch 64).
  "paper": Config(),
  # The paper's model with the demo's recipe: for accelerators.
  "large": Config(optim=RECIPE),
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
