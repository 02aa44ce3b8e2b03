"""WaveGAN generator and discriminator (Donahue et al. 2019) in Flax NNX, with style conditioning.

Shapes follow the authors' TF code: at 16384 samples G maps z [B, 100] to [B, 16, 16d] and
upsamples x4 five times; D mirrors it with five stride-4 convolutions. The longer slices add one
layer (the TF code's 32768/65536 variants, whose last layer has stride 2 and 4 respectively), and
131072/262144 samples a seventh the same way, with widths capped at 32d (`layer_plan`).

Conditioning (when the corpus has more than one style): G concatenates a learned style embedding
to z, or applies it to every layer (FiLM); D adds a projection term <embed(style), h> to its logit
(Miyato & Koyama 2018) or names the style with an auxiliary classifier head (AC-GAN). Both read a
style vector: one block of weights per label field (a one-hot, or a mix that blends styles at
synthesis), then the standardised continuous attributes (`style_vector`); ids are accepted too.

Recipe options (all off by default, leaving the paper's model unchanged): G may upsample by
nearest-neighbour repetition and a convolution (`model.g_upsample="nearest"`, the authors' `nn`
option); D may append a minibatch standard deviation channel before its dense head
(`model.mbstd_group`) and spectrally normalise its convolution kernels and dense output layer
(`model.spectral_norm`).

Long-range context (`wavegan.models.context`, off by default): gated self-attention after the
layers whose maps have `model.attention` steps (G's first projection counts, its output does not;
D's every layer), and a gated bidirectional GRU or LSTM (`model.recurrent`) over G's first map and
D's last.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wavegan.config import SLICE_LENS, ConfigError, ModelConfig
from wavegan.models import context
from wavegan.models.layers import (
  Downsample1d,
  NearestUpsample1d,
  Upsample1d,
  lrelu,
  minibatch_std,
  phase_shuffle,
  spectral_normalize,
)

MAX_WIDTH_MULT = 32  # G's first layers have at most 32d channels (D's last ones too)
SPECTRAL_ITERS = 8  # power iterations per call estimating each weight's largest singular value


def layer_plan(cfg: ModelConfig) -> tuple[int, list[int], list[int]]:
  """(G's first-layer width multiplier, channel list from widest to d, stride list).

  The strides are in the order both G and D apply them, as in the TF code: five of `cfg.stride`
  for 16384 samples; each doubling of the slice then doubles the upsampling, by a last layer of
  stride 2 that the next doubling turns into one of `cfg.stride`:

      16384: 5 x stride        (16d ... d)       32768: 5 x stride, 2  (32d ... d)
      65536: 6 x stride        (32d ... d)      131072: 6 x stride, 2  (32d, 32d, 16d ... d)
      262144: 7 x stride       (32d, 32d, 16d ... d)

  Layer i of L has d * min(2^(L-1-i), MAX_WIDTH_MULT) channels: the 5- and 6-layer plans are the
  paper's (16d and 32d first), and the widths stop doubling at 32d past six layers.

  Raises:
    ConfigError: `cfg.slice_len` is not one of `SLICE_LENS`.
  """
  if cfg.slice_len not in SLICE_LENS:  # each 16384 times a power of two
    raise ConfigError(f"model.slice_len={cfg.slice_len}: must be one of {SLICE_LENS}")
  doublings = (cfg.slice_len // 16384).bit_length() - 1
  strides = [cfg.stride] * (5 + doublings // 2) + [2] * (doublings % 2)
  mults = [min(2 ** (len(strides) - 1 - i), MAX_WIDTH_MULT) for i in range(len(strides))]
  widths = [m * cfg.dim for m in mults]  # e.g. 16d, 8d, 4d, 2d, d
  return mults[0], widths, strides


def base_len(cfg: ModelConfig) -> int:
  """Length of G's first feature map (16 in the paper)."""
  _, _, strides = layer_plan(cfg)
  n = cfg.slice_len
  for s in strides:
    n //= s
  return n


def hidden_maps(cfg: ModelConfig) -> tuple[list[int], list[int], list[int], list[int]]:
  """(G's hidden lengths, their widths, D's hidden lengths, their widths), in computing order.

  G's maps run from its first projection (`base_len` steps) to the map before its output layer;
  D's from its first layer's output to its last (`base_len` steps): where `model.attention` can
  place a block.
  """
  _, widths, strides = layer_plan(cfg)
  g_lengths, n = [], base_len(cfg)
  for s in strides:
    g_lengths.append(n)
    n *= s
  d_lengths, n = [], cfg.slice_len
  for s in strides:
    n //= s
    d_lengths.append(n)
  return g_lengths, widths, d_lengths, widths[::-1]


def placements(cfg: ModelConfig) -> context.Placements:
  """The positions of G's and D's hidden maps (`context.Placements`)."""
  g_lengths, _, d_lengths, _ = hidden_maps(cfg)
  return context.Placements(tuple(g_lengths), tuple(d_lengths))


def sample_latents(rng: jax.Array, batch: int, latent_dim: int) -> jax.Array:
  """G's prior, z ~ U[-1, 1]^latent_dim as in the paper: [B, latent_dim]."""
  return jax.random.uniform(rng, (batch, latent_dim), jnp.float32, -1.0, 1.0)


def style_vector(style: jax.Array, cfg: ModelConfig) -> jax.Array:
  """A style in any accepted form -> the style vector [B, cond_dim] the models read.

  The vector is one block of weights per label field (a one-hot for one style, or a mix), then
  the continuous attributes (standardised, so 0 is the corpus mean). Accepted forms:
  ids [B] (one label field), ids [B, K] (one per field; attributes at their mean), or the
  vector itself [B, cond_dim] (float).
  """
  if not jnp.issubdtype(style.dtype, jnp.integer):
    return style.astype(jnp.float32)
  ids = style[:, None] if style.ndim == 1 else style  # [B, K]
  if ids.shape[1] != len(cfg.groups):
    raise ValueError(
      f"style ids for {ids.shape[1]} label field(s); the model has {len(cfg.groups)}"
    )
  blocks = [jax.nn.one_hot(ids[:, k], n, dtype=jnp.float32) for k, n in enumerate(cfg.groups)]
  blocks.append(jnp.zeros((ids.shape[0], cfg.num_attributes), jnp.float32))
  return jnp.concatenate(blocks, axis=-1)


def style_layers(
  cfg: ModelConfig, widths: list[int], *, rngs: nnx.Rngs
) -> tuple[nnx.Param | None, nnx.List | None, int]:
  """G's conditioning layers: (style embedding [cond_dim, E], FiLM layers, width added to z).

  FiLM (Perez et al. 2018) is a per-channel scale and shift after every hidden layer, zero
  initialised, so the style reaches each resolution instead of only the first projection and
  training starts from the unconditioned network. Without FiLM the embedding is concatenated to z.
  """
  if not cfg.conditional:
    return nnx.data(None), nnx.data(None), 0
  embed = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (cfg.cond_dim, cfg.style_dim)))
  if cfg.g_cond == "film":
    film = nnx.List(
      [
        nnx.Linear(cfg.style_dim, 2 * c, rngs=rngs, kernel_init=nnx.initializers.zeros_init())
        for c in widths
      ]
    )
    return embed, film, 0
  return embed, nnx.data(None), cfg.style_dim


def embed_style(
  g: nnx.Module, z: jax.Array, style: jax.Array | None
) -> tuple[jax.Array, jax.Array | None]:
  """(z, with the style embedding appended unless G uses FiLM; the embedding [B, E] or None)."""
  if g.style_embed is None:
    return z, None
  if style is None:
    raise ValueError("this generator is style-conditioned: pass style ids or weights")
  emb = style_vector(style, g.cfg) @ g.style_embed[...]  # [B, E]
  if g.film is None:
    z = jnp.concatenate([z, emb.astype(z.dtype)], axis=-1)  # [B, latent + E]
  return z, emb


def film(g: nnx.Module, x: jax.Array, emb: jax.Array | None, i: int) -> jax.Array:
  """x [B, ..., C] * (1 + scale) + shift from G's i-th FiLM layer (identity without FiLM)."""
  if g.film is None or emb is None:
    return x
  scale, shift = jnp.split(g.film[i](emb.astype(x.dtype)), 2, axis=-1)  # [B, C] each
  shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  return x * (1.0 + scale.reshape(shape)) + shift.reshape(shape)


def critic_heads(
  cfg: ModelConfig, feat: int, *, rngs: nnx.Rngs
) -> tuple[nnx.Linear, nnx.Param | None, nnx.Linear | None]:
  """D's output layers on its features [B, feat]: realness, projection, AC-GAN head.

  Projection (Miyato & Koyama 2018) adds <embed(style), h> to the logit; AC-GAN (Odena et al.
  2017) has D also name the style: one logit per label-field entry and one regressed value per
  attribute, and G is rewarded when it is recognised.
  """
  out = nnx.Linear(feat, 1, rngs=rngs, kernel_init=nnx.initializers.glorot_uniform())
  proj, classifier = nnx.data(None), nnx.data(None)
  if cfg.conditional and cfg.d_cond == "projection":
    proj = nnx.Param(nnx.initializers.normal(feat**-0.5)(rngs.params(), (cfg.cond_dim, feat)))
  if cfg.conditional and cfg.d_cond == "acgan":
    classifier = nnx.Linear(feat, cfg.cond_dim, rngs=rngs)
  return out, proj, classifier


def critic_outputs(
  d: nnx.Module, h: jax.Array, style: jax.Array | None, spectral_iters: int = 0
) -> tuple[jax.Array, jax.Array | None]:
  """(realness logit [B], style head [B, cond_dim] or None) from features h [B, F].

  With `spectral_iters` > 0 the realness layer's kernel [F, 1] is spectrally normalised (the
  projection embedding and the AC-GAN head are not).
  """
  if spectral_iters:
    kernel = spectral_normalize(d.out.kernel[...], spectral_iters).astype(h.dtype)  # [F, 1]
    logit = (h @ kernel)[:, 0] + d.out.bias[...].astype(h.dtype)[0]  # [B]
  else:
    logit = d.out(h)[:, 0]  # [B]
  if d.style_proj is not None and style is not None:
    emb = style_vector(style, d.cfg) @ d.style_proj[...]  # [B, F]
    logit = logit + jnp.sum(emb.astype(h.dtype) * h, axis=-1)
  classes = d.classifier(h) if d.classifier is not None else None
  return logit, classes


class Generator(nnx.Module):
  """WaveGAN generator: z [B, latent] (+ style [B] or [B, S]) -> audio [B, T, C] in [-1, 1]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    mult, widths, strides = layer_plan(cfg)
    self.base_len = base_len(cfg)
    self.style_embed, self.film, extra = style_layers(cfg, widths, rngs=rngs)
    in_dim = cfg.latent_dim + extra
    self.project = nnx.Linear(
      in_dim, self.base_len * widths[0], rngs=rngs, kernel_init=nnx.initializers.glorot_uniform()
    )
    outs = widths[1:] + [cfg.channels]
    # Both forms have the same parameters; "nearest" repeats samples, then convolves.
    up = NearestUpsample1d if cfg.g_upsample == "nearest" else Upsample1d
    self.ups = nnx.List(
      [up(ci, co, cfg.kernel_len, s, rngs=rngs) for ci, co, s in zip(widths, outs, strides)]
    )
    g_lengths, g_widths, _, _ = hidden_maps(cfg)
    # Long-range context (off by default): attention where `model.attention` asks, recurrence
    # over the first (lowest-resolution) map.
    self.attention = context.attention_blocks(cfg, g_lengths, g_widths, rngs=rngs)
    self.recurrent = context.recurrent_block(cfg, widths[0], rngs=rngs)
    self.post_filter = nnx.data(None)
    if cfg.post_filter_len:
      self.post_filter = nnx.Param(
        nnx.initializers.glorot_uniform(in_axis=(0, 1), out_axis=2)(
          rngs.params(), (cfg.post_filter_len, cfg.channels, cfg.channels)
        )
      )

  def __call__(self, z: jax.Array, style: jax.Array | None = None) -> jax.Array:
    b = z.shape[0]
    z, emb = embed_style(self, z, style)
    x = self.project(z).reshape(b, self.base_len, -1)  # [B, 16, 16d]
    x = nnx.relu(film(self, x, emb, 0))
    x = context.apply(self.attention[0], context.apply(self.recurrent, x))
    for i, up in enumerate(self.ups[:-1]):
      x = nnx.relu(film(self, up(x), emb, i + 1))  # T *= 4, C /= 2
      x = context.apply(self.attention[i + 1], x)
    x = jnp.tanh(self.ups[-1](x))  # [B, T, C]
    if self.post_filter is not None:
      x = jax.lax.conv_general_dilated(
        x,
        self.post_filter[...].astype(x.dtype),
        (1,),
        "SAME",
        dimension_numbers=("NWC", "WIO", "NWC"),
      )
    return x


class Discriminator(nnx.Module):
  """WaveGAN critic: audio [B, T, C] (+ style ids [B]) -> one logit per example [B].

  With `cfg.mbstd_group` = G > 0 its last feature map gains a minibatch standard deviation
  channel (over groups of G consecutive clips; B must be a multiple of G) before the dense head.
  With `cfg.spectral_norm` its convolution kernels and dense output kernel are divided by their
  largest singular values, estimated on every call (`SPECTRAL_ITERS` power iterations).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    mult, widths, strides = layer_plan(cfg)
    chans = [cfg.channels] + widths[::-1]  # C, d, 2d, 4d, 8d, 16d (, 32d)
    self.spectral_iters = SPECTRAL_ITERS if cfg.spectral_norm else 0
    # Widths mirror G's, strides do not: the longer slices' stride-2 layer is D's last, as in
    # the TF code (32768 -> 8192 -> ... -> 32 -> 16).
    self.downs = nnx.List(
      [
        Downsample1d(ci, co, cfg.kernel_len, s, rngs=rngs, spectral_iters=self.spectral_iters)
        for ci, co, s in zip(chans[:-1], chans[1:], strides)
      ]
    )
    feat = base_len(cfg) * (chans[-1] + (1 if cfg.mbstd_group else 0))
    self.out, self.style_proj, self.classifier = critic_heads(cfg, feat, rngs=rngs)
    _, _, d_lengths, d_widths = hidden_maps(cfg)
    self.attention = context.attention_blocks(cfg, d_lengths, d_widths, rngs=rngs)
    self.recurrent = context.recurrent_block(cfg, chans[-1], rngs=rngs)

  def features(self, x: jax.Array, rng: jax.Array) -> jax.Array:
    """[B, T, C] -> flat features [B, 16 * 16d] ([B, 16 * (16d + 1)] with minibatch std)."""
    keys = jax.random.split(rng, len(self.downs))
    for i, down in enumerate(self.downs):
      x = lrelu(down(x))  # T /= 4, C *= 2
      if i < 4:  # the TF code shuffles after the first four layers only
        x = phase_shuffle(x, keys[i], self.cfg.phase_shuffle)
      x = context.apply(self.attention[i], x)
    x = context.apply(self.recurrent, x)  # over the last map: [B, 16, 16d]
    if self.cfg.mbstd_group:
      x = jnp.concatenate([x, minibatch_std(x, self.cfg.mbstd_group)], axis=-1)  # [B, 16, 16d+1]
    return x.reshape(x.shape[0], -1)

  def __call__(self, x: jax.Array, style: jax.Array | None, rng: jax.Array) -> jax.Array:
    return self.logits(x, style, rng)[0]

  def logits(
    self, x: jax.Array, style: jax.Array | None, rng: jax.Array
  ) -> tuple[jax.Array, jax.Array | None]:
    """(realness logit [B], style head [B, cond_dim] with the AC-GAN head, else None)."""
    return critic_outputs(self, self.features(x, rng), style, self.spectral_iters)
