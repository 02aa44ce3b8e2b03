"""Differentiable, label-preserving augmentation of the audio the critic reads (DiffAugment, ADA).

Every op maps audio [B, T, C] to audio of the same shape and dtype, applying itself to each clip
independently with probability p (a per-clip Bernoulli draw); a clip it is not applied to comes back
exactly unchanged. Each op is differentiable in x, so G learns through it (Zhao et al. 2020,
"Differentiable Augmentation"); real and generated clips go through the same ops, so the critic
cannot tell them apart by the augmentation (Karras et al. 2020, "Training GANs with limited data").

The randomness is split from its use: `draw` makes every per-clip random number for a batch (arrays
with a leading B axis, so the training step can draw them for the whole batch and slice them into
micro-batches), `apply` uses them with a probability p that may be a traced scalar (ADA's).
`augment(x, key, p, ops)` and the single ops (`gain(x, key, p)`, ...) do both.

The ops, applied in this order:

  gain      x * 10^(g / 20), g ~ U[-GAIN_DB, GAIN_DB] dB per clip
  polarity  -x
  shift     x delayed by an integer s ~ U{-T/SHIFT_DIV, ..., T/SHIFT_DIV}, zero-filled (not circular)
  noise     x + r * rms(x) * n, n ~ N(0, 1) per sample, r ~ U[0, NOISE_MAX] per clip: noise
            relative to the clip's own level, so a quiet clip is not drowned (SNR >= 20 dB)
  mask      a contiguous span of L ~ U{0, ..., T/MASK_DIV} samples set to zero
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Draws = dict[str, dict[str, jax.Array]]  # {op: {name: [B, ...]}}

OPS = ("gain", "polarity", "shift", "noise", "mask")  # the fixed order the ops are applied in
GAIN_DB = 6.0  # +-6 dB: recordings of one class vary at least this much in level
SHIFT_DIV = 16  # shifts up to T/16: onsets in training slices are not aligned either
NOISE_MAX = 0.1  # noise std up to 10% of the clip's RMS: SNR >= 20 dB keeps the content audible
MASK_DIV = 8  # masks up to T/8: most of the clip, and so what it is, stays
RMS_EPS = 1e-12  # inside the square root: finite gradients on silent clips


# ---------------------------------------------------------------------------------------------
# Per-op draws: every random number for a batch of b clips of t samples and c channels


def _draw_gain(key: jax.Array, b: int, t: int, c: int) -> dict[str, jax.Array]:
  return {"db": jax.random.uniform(key, (b,), jnp.float32, -GAIN_DB, GAIN_DB)}


def _draw_polarity(key: jax.Array, b: int, t: int, c: int) -> dict[str, jax.Array]:
  return {}


def _draw_shift(key: jax.Array, b: int, t: int, c: int) -> dict[str, jax.Array]:
  s = t // SHIFT_DIV
  return {"offset": jax.random.randint(key, (b,), -s, s + 1, jnp.int32)}


def _draw_noise(key: jax.Array, b: int, t: int, c: int) -> dict[str, jax.Array]:
  kr, kn = jax.random.split(key)
  return {
    "ratio": jax.random.uniform(kr, (b,), jnp.float32, 0.0, NOISE_MAX),
    "noise": jax.random.normal(kn, (b, t, c), jnp.float32),
  }


def _draw_mask(key: jax.Array, b: int, t: int, c: int) -> dict[str, jax.Array]:
  kl, ks = jax.random.split(key)
  length = jax.random.randint(kl, (b,), 0, t // MASK_DIV + 1, jnp.int32)
  return {"length": length, "start": jax.random.randint(ks, (b,), 0, t - length + 1, jnp.int32)}


# ---------------------------------------------------------------------------------------------
# Per-op maps, applied to every clip (`apply` chooses which clips keep the result)


def _per_clip(v: jax.Array, x: jax.Array) -> jax.Array:
  """v [B] as [B, 1, 1] in x's dtype."""
  return v.astype(x.dtype)[:, None, None]


def _gain(x: jax.Array, d: dict[str, jax.Array]) -> jax.Array:
  return x * _per_clip(10.0 ** (d["db"] / 20.0), x)


def _polarity(x: jax.Array, d: dict[str, jax.Array]) -> jax.Array:
  return -x


def _shift(x: jax.Array, d: dict[str, jax.Array]) -> jax.Array:
  """y[b, t] = x[b, t - offset[b]] where that index is in [0, T), else 0 (a gather)."""
  t = x.shape[1]
  idx = jnp.arange(t)[None, :] - d["offset"][:, None]  # [B, T]
  inside = (idx >= 0) & (idx < t)
  idx = jnp.broadcast_to(jnp.clip(idx, 0, t - 1)[:, :, None], x.shape)  # [B, T, C]
  return jnp.where(inside[:, :, None], jnp.take_along_axis(x, idx, axis=1), jnp.zeros((), x.dtype))


def _noise(x: jax.Array, d: dict[str, jax.Array]) -> jax.Array:
  rms = jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(1, 2)) + RMS_EPS)  # [B]
  return x + _per_clip(d["ratio"] * rms, x) * d["noise"].astype(x.dtype)


def _mask(x: jax.Array, d: dict[str, jax.Array]) -> jax.Array:
  pos = jnp.arange(x.shape[1])[None, :]  # [1, T]
  start = d["start"][:, None]
  span = (pos >= start) & (pos < start + d["length"][:, None])  # [B, T]
  return jnp.where(span[:, :, None], jnp.zeros((), x.dtype), x)


Op = Callable[[jax.Array, dict[str, jax.Array]], jax.Array]
_OPS: dict[str, tuple[Callable[..., dict[str, jax.Array]], Op]] = {
  "gain": (_draw_gain, _gain),
  "polarity": (_draw_polarity, _polarity),
  "shift": (_draw_shift, _shift),
  "noise": (_draw_noise, _noise),
  "mask": (_draw_mask, _mask),
}


# ---------------------------------------------------------------------------------------------
# Composition


def draw(key: jax.Array, b: int, t: int, c: int, ops: Sequence[str] = OPS) -> Draws:
  """Every random number `apply` needs for b clips [b, t, c].

  Each op has a key of its own (its place in `OPS`), so choosing other ops leaves its draws as
  they were. Every array has the leading axis b: rows of a batch's draws are a sub-batch's.

  Returns:
    {op: {"u": U[0, 1) [b] (the op applies where u < p), and the op's parameters [b, ...]}}.
  """
  unknown = sorted(set(ops) - set(OPS))
  if unknown:
    raise ValueError(f"unknown augmentations {unknown}; valid: {', '.join(OPS)}")
  keys = jax.random.split(key, len(OPS))
  out = {}
  for i, name in enumerate(OPS):
    if name in ops:
      ku, kp = jax.random.split(keys[i])
      out[name] = {"u": jax.random.uniform(ku, (b,), jnp.float32), **_OPS[name][0](kp, b, t, c)}
  return out


def apply(x: jax.Array, draws: Draws, p: jax.Array | float) -> jax.Array:
  """The ops of `draws`, in `OPS` order, each on the clips of x [B, T, C] whose u < p.

  Args:
    x: audio [B, T, C].
    draws: `draw`'s output for B clips.
    p: the probability (a float or a traced scalar): 0 leaves x exactly as it is.
  Returns:
    Augmented audio [B, T, C], x's dtype.
  """
  for name in OPS:
    if name in draws:
      d = draws[name]
      on = d["u"] < p  # [B]
      x = jnp.where(on[:, None, None], _OPS[name][1](x, d), x)
  return x


def augment(
  x: jax.Array, key: jax.Array, p: jax.Array | float, ops: Sequence[str] = OPS
) -> jax.Array:
  """`ops` on x [B, T, C], each applied to each clip with probability p; see `apply`."""
  return apply(x, draw(key, *x.shape, ops=ops), p)


def gain(x: jax.Array, key: jax.Array, p: jax.Array | float) -> jax.Array:
  """Each clip of x [B, T, C] times 10^(g / 20), g ~ U[-6, 6] dB, with probability p."""
  return augment(x, key, p, ("gain",))


def polarity(x: jax.Array, key: jax.Array, p: jax.Array | float) -> jax.Array:
  """Each clip of x [B, T, C] negated with probability p."""
  return augment(x, key, p, ("polarity",))


def shift(x: jax.Array, key: jax.Array, p: jax.Array | float) -> jax.Array:
  """Each clip of x [B, T, C] delayed by up to +-T/16 samples (zero-filled) with probability p."""
  return augment(x, key, p, ("shift",))


def noise(x: jax.Array, key: jax.Array, p: jax.Array | float) -> jax.Array:
  """Gaussian noise of up to 10% of the clip's RMS added to each clip of x [B, T, C] with
  probability p."""
  return augment(x, key, p, ("noise",))


def mask(x: jax.Array, key: jax.Array, p: jax.Array | float) -> jax.Array:
  """A span of up to T/8 samples of each clip of x [B, T, C] zeroed with probability p."""
  return augment(x, key, p, ("mask",))


# ---------------------------------------------------------------------------------------------
# ADA


def ada_update(p: jax.Array, sign_real: jax.Array, target: float, steps: int) -> jax.Array:
  """ADA's probability after one step: p + sign(r - target) / steps, clipped to [0, 1].

  Args:
    p: the current probability, float32 [].
    sign_real: r = E[sign(D(real))] over the step's critic updates (on the clips D read).
    target: the r aimed at: above it D is too sure of the training clips and p rises.
    steps: the number of steps in which p can go from 0 to 1.
  """
  p = p + jnp.sign(sign_real - target).astype(jnp.float32) / steps
  return jnp.clip(p, 0.0, 1.0).astype(jnp.float32)
