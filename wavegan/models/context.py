"""Long-range context for the convolutional models: self-attention and recurrence, in Flax NNX.

A WaveGAN or SpecGAN layer sees a few dozen neighbouring steps; these blocks let every step of a
feature map read the whole clip. Both are residual with a learned gate that starts at 0 (SAGAN's
gamma, Zhang et al. 2019), so a new block is the identity at initialisation and training starts
from the convolutional network it extends.

* `SelfAttention`: multi-head dot-product self-attention over the positions of a feature map
  [B, T, C] (a 2-D map [B, F, K, C] is read as F * K positions). Its score matrix has
  B * heads * T^2 entries: `attention_bytes` sizes it and `check_memory` refuses a placement that
  cannot fit.
* `Recurrent`: a bidirectional GRU or LSTM (`nnx.GRUCell`, `nnx.OptimizedLSTMCell`) run with
  `jax.lax.scan` over the positions, forward and backward, so one state carries through the clip.

Where the blocks go is the model's decision (`model.attention`: the lengths of the feature maps
that get a block; `model.recurrent`: the lowest-resolution maps of G and D); `Placements` is the
per-network record of the lengths each model kind offers.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from wavegan.config import RECURRENT, Config, ConfigError, ModelConfig

SCORE_COPIES = 4  # live [B, H, T, T] float32 arrays per block in a training step: scores,
# probabilities and the gradients of both


@dataclasses.dataclass(frozen=True)
class Placements:
  """The positions per feature map of a network's hidden layers, in the order it computes them.

  Attributes:
    g: G's hidden maps, from its first projection to the map before its output layer.
    d: D's hidden maps, from its first layer's output to its last.
  """

  g: tuple[int, ...]
  d: tuple[int, ...]


def qk_width(channels: int, heads: int) -> tuple[int, int]:
  """(heads, query/key/value width) of a block on `channels`: half the channels (SAGAN reads C/8
  for queries and keys; half keeps more per head at the narrow widths of small models), at least
  one per head and a multiple of the heads."""
  heads = max(1, min(heads, channels))
  width = max(heads, (channels // 2) // heads * heads)
  return heads, width


class SelfAttention(nnx.Module):
  """Gated multi-head self-attention: x + gate * MHA(x, x), the gate a scalar starting at 0.

  Reads [B, T, C] or a 2-D map [B, F, K, C] (attended over its F * K positions); returns the same
  shape and dtype, computing in float32.
  """

  def __init__(self, channels: int, heads: int, *, rngs: nnx.Rngs):
    heads, width = qk_width(channels, heads)
    self.attention = nnx.MultiHeadAttention(
      heads,
      channels,
      qkv_features=width,
      out_features=channels,
      decode=False,
      keep_rngs=False,
      rngs=rngs,
    )
    self.gate = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    shape = x.shape
    # in float32 whatever the compute dtype: a softmax over T scores loses too much in bfloat16
    seq = x.reshape(shape[0], -1, shape[-1]).astype(jnp.float32)  # [B, T, C]
    y = self.attention(seq, seq).astype(x.dtype)  # [B, T, C]
    return x + self.gate[...].astype(x.dtype) * y.reshape(shape)


def scan_cell(cell: nnx.Module, x: jax.Array, carry: jax.Array | tuple) -> jax.Array:
  """A recurrent cell run over x [B, T, C] from `carry` with `jax.lax.scan`: outputs [B, T, H]."""
  graph, state = nnx.split(cell)

  def body(carry, xt):
    carry, y = nnx.merge(graph, state)(carry, xt)
    return carry, y

  _, ys = jax.lax.scan(body, carry, x.transpose(1, 0, 2))  # [T, B, H]
  return ys.transpose(1, 0, 2)


class Recurrent(nnx.Module):
  """Gated bidirectional GRU or LSTM: x + gate * W [fwd(x); bwd(x)], the gate starting at 0.

  Each direction has C / 2 hidden units; a dense layer maps their concatenation back to C. Reads
  [B, T, C] or [B, F, K, C] (its F * K positions in frame-major order); returns x's shape and dtype.
  """

  def __init__(self, channels: int, kind: str, *, rngs: nnx.Rngs):
    if kind not in RECURRENT[1:]:
      raise ConfigError(f"model.recurrent={kind!r}: must be one of {RECURRENT}")
    self.kind = kind
    self.hidden = max(channels // 2, 1)
    cell = nnx.GRUCell if kind == "gru" else nnx.OptimizedLSTMCell
    self.forward = cell(channels, self.hidden, rngs=rngs)
    self.backward = cell(channels, self.hidden, rngs=rngs)
    self.out = nnx.Linear(2 * self.hidden, channels, rngs=rngs)
    self.gate = nnx.Param(jnp.zeros((), jnp.float32))

  def _carry(self, batch: int) -> jax.Array | tuple[jax.Array, jax.Array]:
    h = jnp.zeros((batch, self.hidden), jnp.float32)
    return h if self.kind == "gru" else (h, h)  # LSTM: (cell, hidden)

  def __call__(self, x: jax.Array) -> jax.Array:
    shape = x.shape
    seq = x.reshape(shape[0], -1, shape[-1]).astype(jnp.float32)  # [B, T, C]
    fwd = scan_cell(self.forward, seq, self._carry(shape[0]))  # [B, T, H]
    bwd = scan_cell(self.backward, seq[:, ::-1], self._carry(shape[0]))[:, ::-1]
    y = self.out(jnp.concatenate([fwd, bwd], axis=-1)).astype(x.dtype)  # [B, T, C]
    return x + self.gate[...].astype(x.dtype) * y.reshape(shape)


def attention_blocks(
  cfg: ModelConfig, lengths: tuple[int, ...], widths: tuple[int, ...], *, rngs: nnx.Rngs
) -> nnx.List:
  """One `SelfAttention` (or None) per hidden map of a network, where `model.attention` asks.

  Args:
    cfg: the model config.
    lengths: the positions of each hidden map, in order.
    widths: the channels of each hidden map.
  """
  wanted = set(cfg.attention_at)
  return nnx.List(
    [
      SelfAttention(c, cfg.attention_heads, rngs=rngs) if n in wanted else None
      for n, c in zip(lengths, widths, strict=True)
    ]
  )


def recurrent_block(cfg: ModelConfig, channels: int, *, rngs: nnx.Rngs) -> Recurrent | None:
  """The `Recurrent` block of `model.recurrent` on `channels`, or None when it is "none"."""
  if cfg.recurrent == "none":
    return nnx.data(None)
  return Recurrent(channels, cfg.recurrent, rngs=rngs)


def apply(block: nnx.Module | None, x: jax.Array) -> jax.Array:
  """x through `block`, or x itself where there is none."""
  return x if block is None else block(x)


def check_placements(cfg: ModelConfig, places: Placements) -> None:
  """Refuses a `model.attention` length that neither network has a hidden map of.

  Raises:
    ConfigError: naming the lengths G and D offer.
  """
  missing = [n for n in cfg.attention_at if n not in places.g and n not in places.d]
  if missing:
    raise ConfigError(
      f"model.attention={','.join(map(str, cfg.attention))}: no feature map has "
      f"{', '.join(map(str, missing))} positions; G's have {', '.join(map(str, places.g))}, "
      f"D's {', '.join(map(str, places.d))} (0 = off)"
    )


def attention_bytes(batch: int, heads: int, positions: int) -> int:
  """Bytes of one block's float32 score matrices in a training step: SCORE_COPIES x B x H x T^2."""
  return SCORE_COPIES * batch * heads * positions**2 * 4


def available_bytes() -> int:
  """The memory the score matrices may take: the default device's limit on an accelerator, the
  machine's physical memory on the CPU."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
      return int(stats["bytes_limit"]) * jax.local_device_count()
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: float) -> str:
  return f"{n / 2**30:,.1f} GiB"


def check_memory(cfg: Config, places: Placements, limit: int | None = None) -> None:
  """Refuses attention placements whose score matrices would not fit in memory at the run's batch.

  Each block holds `attention_bytes` (B x heads x T^2 float32 values, `SCORE_COPIES` times) in a
  training step; G's and D's blocks are added up and compared with `limit` (`available_bytes` when
  None).

  Raises:
    ConfigError: with the figure, the limit and the largest placement that would fit.
  """
  m = cfg.model
  if not m.attention_at:
    return
  limit = available_bytes() if limit is None else limit
  b, heads = cfg.train.batch_size, m.attention_heads
  blocks = [n for n in (*places.g, *places.d) if n in m.attention_at]
  need = sum(attention_bytes(b, heads, n) for n in blocks)
  if need <= limit:
    return
  offered = sorted(set(places.g) | set(places.d))
  fits = [n for n in offered if 2 * attention_bytes(b, heads, n) <= limit]
  hint = f"at most {fits[-1]} positions fits" if fits else "no placement fits: lower the batch"
  largest = max(blocks)
  raise ConfigError(
    f"model.attention={','.join(map(str, m.attention))}: the attention matrices need "
    f"{_gib(need)} (at {largest} positions: {SCORE_COPIES} x batch {b} x {heads} heads x "
    f"{largest}^2 float32 = {_gib(attention_bytes(b, heads, largest))} per block), more than "
    f"the {_gib(limit)} available; {hint} in G and D at this batch"
  )
