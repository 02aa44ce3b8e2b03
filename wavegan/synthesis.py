"""Synthesis from a trained run: latents -> audio with the EMA generator, reproducibly.

Latent i of seed s is `uniform(fold_in(key(s), i))`, so clip i is the same whatever `n` or batch
size a caller asks for, and the same seed and style always give the same audio.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from checkpoints import Checkpointer, CheckpointNotFoundError
from wavegan import train_step as ts
from wavegan.config import Config, ConfigError
from wavegan.models import Generator
from wavegan.trainer import RunInfo, abstract_state, checkpoint_dir


def latents(seed: int, n: int, latent_dim: int, start: int = 0) -> jax.Array:
  """Latents [n, latent_dim] for indices start .. start + n - 1 of `seed`."""
  base = jax.random.key(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + n))
  return jax.vmap(lambda k: ts.sample_latents(k, 1, latent_dim)[0])(keys)


class Synthesizer:
  """The EMA generator of a run with its config, style names and sample rate."""

  def __init__(self, run: RunInfo, g_params: Any, batch_size: int = 64):
    self.run = run
    self.config: Config = run.config
    self.styles = run.styles
    self.sample_rate = run.config.data.sample_rate
    self.batch_size = batch_size
    # G's structure without computing its initial parameters (the checkpoint supplies them).
    graph = nnx.graphdef(nnx.eval_shape(lambda: Generator(self.config.model, rngs=nnx.Rngs(0))))
    self._params = g_params
    conditional = self.config.model.conditional
    # One compiled function per batch shape; every batch is padded to `batch_size`.
    self._generate = jax.jit(
        lambda p, z, y: nnx.merge(graph, p)(z, y if conditional else None))

  @classmethod
  def load(cls, workdir: str, batch_size: int = 64) -> Synthesizer:
    """Loads the latest checkpoint of a training run folder."""
    if not os.path.isdir(workdir):
      raise ConfigError(f"{workdir}: no such run folder")
    ck = Checkpointer(checkpoint_dir(workdir), keep=1)
    try:
      run = RunInfo.from_metadata(ck.read_metadata())
      tree, _ = ck.restore(abstract_state(run.config))
    except CheckpointNotFoundError:
      raise ConfigError(f"{workdir}: no checkpoint found (train it first with `wavegan train`)") from None
    finally:
      ck.close()
    return cls(run, tree["ema_params"], batch_size)

  def style_ids(self, style: str | None, n: int) -> np.ndarray:
    """Style name -> ids [n]; None cycles through every style."""
    if style is None:
      return np.arange(n, dtype=np.int32) % max(len(self.styles), 1)
    if style not in self.styles:
      raise ConfigError(f"unknown style {style!r}; valid: {', '.join(self.styles)}")
    return np.full((n,), self.styles.index(style), np.int32)

  def from_latents(self, z: jax.Array, style_ids: np.ndarray) -> np.ndarray:
    """Latents [n, latent] + style ids [n] -> float32 audio [n, T, C], in fixed-size batches."""
    n, b = z.shape[0], self.batch_size
    out = []
    for start in range(0, n, b):
      zb, yb = z[start:start + b], style_ids[start:start + b]
      pad = b - zb.shape[0]
      zb = jnp.pad(zb, ((0, pad), (0, 0)))
      yb = jnp.pad(jnp.asarray(yb), (0, pad))
      out.append(np.asarray(self._generate(self._params, zb, yb))[: b - pad])
    return np.concatenate(out, axis=0)

  def generate(self, n: int, style: str | None = None, seed: int = 0) -> np.ndarray:
    """n clips [n, T, C] of `style` (None: every style in turn) from `seed`."""
    ids = self.style_ids(style, n)
    z = latents(seed, n, self.config.model.latent_dim)
    return self.from_latents(z, ids)
