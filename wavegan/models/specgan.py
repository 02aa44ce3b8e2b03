"""SpecGAN's 2-D generator and discriminator (Donahue et al. 2019) in Flax NNX, and its audio glue.

SpecGAN models normalised log-magnitude images [B, frames, bins, C] (128 x 128 for 16384 samples
with `n_fft=256`, `hop=128`) with a DCGAN-like pair: G maps z [B, 100] to [B, 4, 4, 16d] and
upsamples x2 five times with 5 x 5 transposed convolutions; D mirrors it with five 5 x 5 stride-2
convolutions. Longer slices only add frames, so their first feature map is frames/32 x bins/32.

As in `layers.Upsample1d` / `Downsample1d`, the strided layers keep the paper's parameters (a
`[5, 5, C_in, C_out]` kernel and a `[C_out]` bias) but compute with stride-1 convolutions:

* `Upsample2d` (transposed conv, TF 'SAME', stride 2) is one 3 x 3 stride-1 convolution producing
  the 4 output phases as 4 * C_out channels, then a depth-to-space reshape. XLA:CPU's transposed
  convolution (an lhs-dilated convolution) made G's forward 7-9x slower at d=16, batch 16.
* `Downsample2d` (strided conv, TF 'SAME', stride 2) is a space-to-depth reshape (each 2 x 2
  block -> channels) followed by a 3 x 3 stride-1 convolution. XLA's strided convolution is
  ~25% faster forward, but its input gradient (in the gradient penalty and the G update) is
  lhs-dilated again: the WGAN-GP critic gradient was ~5x slower at d=16, batch 16.

Both run through `conv2d`, whose own VJP keeps the critic `scan` fast (see there).

Conditioning is `models.Generator` / `models.Discriminator`'s, with the same attribute names, so
the trainer, EMA and checkpoints treat both model kinds alike. So is long-range context
(`wavegan.models.context`): `model.attention` counts a map's frames x bins positions (1024 is
the 32 x 32 map), and `model.recurrent` runs over G's first map and D's last, frame by frame.

The functions at the end connect the images to audio: `spec_features` (audio -> normalised
images, the training input), `spec_to_waveform` (images -> audio by Griffin-Lim) and
`audio_moments` (the corpus' per-bin statistics, streamed in fixed-shape chunks).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegan import dsp
from wavegan.config import ModelConfig
from wavegan.models import context
from wavegan.models.layers import lrelu, polyphase_plan, same_pad_before
from wavegan.models.waveform import critic_heads, critic_outputs, embed_style, film, style_layers

KERNEL = 5  # the paper's 5 x 5 kernels
STRIDE = 2  # every layer halves (D) or doubles (G) both image axes
N_LAYERS = 5  # so images are 32x the first feature map on each axis

_DN = ("NHWC", "HWIO", "NHWC")


def image_shape(cfg: ModelConfig) -> tuple[int, int]:
  """(frames, bins) of SpecGAN's images: (slice_len // hop, n_fft // 2), 128 x 128 in the paper."""
  return cfg.slice_len // cfg.hop, cfg.n_fft // 2


def base_shape(cfg: ModelConfig) -> tuple[int, int]:
  """(frames, bins) of G's first feature map (4 x 4 in the paper)."""
  frames, bins = image_shape(cfg)
  scale = STRIDE**N_LAYERS
  if frames % scale or bins % scale:
    raise ValueError(f"specgan needs frames ({frames}) and bins ({bins}) divisible by {scale}")
  return frames // scale, bins // scale


def placements(cfg: ModelConfig) -> context.Placements:
  """The positions (frames x bins) of G's hidden maps (from its first projection on) and D's (from
  its first layer's output on): where `model.attention` can place a block."""
  h0, w0 = base_shape(cfg)
  g = tuple(h0 * w0 * 4**i for i in range(N_LAYERS))  # 16, 64, ..., 4096 in the paper
  return context.Placements(g, g[::-1])


def layer_widths(cfg: ModelConfig) -> list[int]:
  """Hidden widths from widest to narrowest: 16d, 8d, 4d, 2d, d."""
  return [16 * cfg.dim // 2**i for i in range(N_LAYERS)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, w: jax.Array, pad: tuple[int, int]) -> jax.Array:
  """Stride-1 2-D convolution (cross-correlation): x [B, H, W, C_in], w [T, T, C_in, C_out].

  Both image axes are zero-padded by `pad` = (before, after): [B, H + before + after - T + 1,
  W + before + after - T + 1, C_out]. Like `layers.conv1d` it has its own VJP, so every
  derivative, to any order, is a convolution of this canonical form or a matmul: XLA's automatic
  transposes run through XLA:CPU's generic loop emitter inside the critic `scan` (a WGAN-GP
  critic step took ~4 s instead of 0.15 s at d=16, batch 16).
  """
  return jax.lax.conv_general_dilated(x, w, (1, 1), [pad, pad], dimension_numbers=_DN)


def _conv2d_fwd(x, w, pad):
  return conv2d(x, w, pad), (x, w)


def _conv2d_bwd(pad, res, g):
  x, w = res
  taps = w.shape[0]
  # dx[m] = sum_t g[m + before - t] w[t]^T on each axis: a correlation of g with the kernel
  # flipped on both axes and transposed in its channels.
  w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)  # [T, T, C_out, C_in]
  dx = conv2d(g, w_t, (taps - 1 - pad[0], taps - 1 - pad[1]))  # [B, H, W, C_in]
  dw = _conv2d_weight_grad(x, g, pad, taps)  # [T, T, C_in, C_out]
  return dx, dw.astype(w.dtype)


def _conv2d_weight_grad(x: jax.Array, g: jax.Array, pad: tuple[int, int], taps: int) -> jax.Array:
  """dw[t1, t2] = sum_{b, h, w} x_pad[b, h + t1, w + t2]^T g[b, h, w]: [T, T, C_in, C_out]."""
  xp = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))  # [B, H_pad, W_pad, C_in]
  # The sum as one canonical convolution: C_in as the batch, B as the input feature and g as a
  # kernel spanning the whole image. Per-tap matmuls were no faster in the critic scan, and 8x
  # slower for the layers with 4 channels on one side (D's first, G's last).
  lhs = xp.transpose(3, 1, 2, 0)  # [C_in, H_pad, W_pad, B]
  rhs = g.transpose(1, 2, 0, 3)  # [H, W, B, C_out]
  out = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), [(0, 0), (0, 0)], dimension_numbers=_DN)
  return out.transpose(1, 2, 0, 3)  # [T, T, C_in, C_out]


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def polyphase_kernel_2d(kernel: jax.Array, stride: int) -> tuple[jax.Array, tuple[int, int]]:
  """[K, K, C_in, C_out] transposed-conv kernel -> [T, T, C_in, s*s*C_out] stride-1 kernel.

  TF's transposed conv ('SAME') is separable over the two axes: along each one output n = s*q + r
  reads taps exactly as in 1-D (`layers.polyphase_plan`), so phase (r1, r2) at tap (t1, t2) has
  weight W[index[t1, r1], index[t2, r2]]. The output channels are ordered (r1, r2, C_out), which
  is what `_depth_to_space` expects.

  Returns:
    (kernel [T, T, C_in, s*s*C_out], (left, right) padding of each axis of x).
  """
  k, _, c_in, c_out = kernel.shape
  index, pad_l, pad_r = polyphase_plan(k, stride)  # [T, s], K = zero tap
  taps = index.shape[0]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # [K+1, K+1, C_in, C_out]
  w = padded[index[:, None, :, None], index[None, :, None, :]]  # [T, T, s, s, C_in, C_out]
  w = w.transpose(0, 1, 4, 2, 3, 5).reshape(taps, taps, c_in, stride * stride * c_out)
  return w, (pad_l, pad_r)


def space_to_depth_kernel_2d(kernel: jax.Array, stride: int) -> tuple[jax.Array, tuple[int, int]]:
  """[K, K, C_in, C_out] strided-conv kernel -> [T, T, s*s*C_in, C_out] kernel over s x s blocks.

  The 2-D form of `layers.space_to_depth_kernel`: along each axis, tap k - p = s*u + r reads
  block u at phase r, so zero-padding the kernel to whole blocks and splitting each axis into
  (tap, phase) gives a stride-1 kernel whose input channels are ordered (r1, r2, C_in), matching
  `_space_to_depth`.

  Returns:
    (kernel [T, T, s*s*C_in, C_out], (left, right) padding of each axis, in blocks).
  """
  k, _, c_in, c_out = kernel.shape
  p = same_pad_before(k, stride)
  u_min, u_max = (-p) // stride, (k - 1 - p) // stride
  taps = u_max - u_min + 1
  offset = -p - u_min * stride  # where W[0] lands in the flattened [T * s] taps
  pad = (offset, taps * stride - offset - k)
  w = jnp.pad(kernel, (pad, pad, (0, 0), (0, 0)))  # [T*s, T*s, C_in, C_out]
  w = w.reshape(taps, stride, taps, stride, c_in, c_out)
  w = w.transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, stride * stride * c_in, c_out)
  return w, (-u_min, u_max)


def _depth_to_space(y: jax.Array, stride: int) -> jax.Array:
  """[B, H, W, s*s*C] with channels ordered (r1, r2, C) -> [B, s*H, s*W, C]."""
  b, h, w, c = y.shape
  y = y.reshape(b, h, w, stride, stride, c // stride**2)
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * stride, w * stride, -1)


def _space_to_depth(x: jax.Array, stride: int) -> jax.Array:
  """[B, s*H, s*W, C] -> [B, H, W, s*s*C] with channels ordered (r1, r2, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // stride, stride, w // stride, stride, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // stride, w // stride, -1)


def _glorot(key: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
  # tf.layers' default for conv kernels: fan_in + fan_out = K*K * (C_in + C_out). Flax's default
  # axes (in -2, out -1, the rest a receptive field counted on both sides) give exactly that.
  return nnx.initializers.glorot_uniform()(key, shape, jnp.float32)


class _StridedConv2d(nnx.Module):
  """The parameters of a 5 x 5, stride-s layer: kernel [K, K, C_in, C_out] and bias [C_out]."""

  def __init__(
    self, c_in: int, c_out: int, kernel_len: int = KERNEL, stride: int = STRIDE, *, rngs: nnx.Rngs
  ):
    self.stride = stride
    self.kernel = nnx.Param(_glorot(rngs.params(), (kernel_len, kernel_len, c_in, c_out)))
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))


class Upsample2d(_StridedConv2d):
  """Transposed conv, stride s, TF 'SAME': [B, H, W, C_in] -> [B, s*H, s*W, C_out]."""

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(x.dtype)
    w, pad = polyphase_kernel_2d(kernel, self.stride)  # [T, T, C_in, s*s*C_out]
    y = conv2d(x, w, pad)  # [B, H, W, s*s*C_out]
    y = _depth_to_space(y, self.stride)  # [B, s*H, s*W, C_out]
    return y + self.bias[...].astype(x.dtype)


class Downsample2d(_StridedConv2d):
  """Strided conv, stride s, TF 'SAME': [B, s*H, s*W, C_in] -> [B, H, W, C_out]."""

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(x.dtype)
    w, pad = space_to_depth_kernel_2d(kernel, self.stride)  # [T, T, s*s*C_in, C_out]
    blocks = _space_to_depth(x, self.stride)  # [B, H, W, s*s*C_in]
    y = conv2d(blocks, w, pad)  # [B, H, W, C_out]
    return y + self.bias[...].astype(x.dtype)


class SpecGenerator(nnx.Module):
  """SpecGAN generator: z [B, latent] (+ style) -> images [B, frames, bins, C] in [-1, 1].

  `planes` images per audio channel (C * planes channels out) and a `bounded` (tanh) output are
  class attributes, so the phase-aware kinds (`wavegan.models.phase`) reuse the network.
  """

  planes = 1
  bounded = True

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    widths = layer_widths(cfg)
    self.base_shape = base_shape(cfg)
    self.style_embed, self.film, extra = style_layers(cfg, widths, rngs=rngs)
    in_dim = cfg.latent_dim + extra
    h0, w0 = self.base_shape
    self.project = nnx.Linear(
      in_dim, h0 * w0 * widths[0], rngs=rngs, kernel_init=nnx.initializers.glorot_uniform()
    )
    outs = widths[1:] + [cfg.channels * self.planes]
    self.ups = nnx.List([Upsample2d(ci, co, rngs=rngs) for ci, co in zip(widths, outs)])
    # Long-range context (off by default), as in the waveform generator.
    self.attention = context.attention_blocks(cfg, placements(cfg).g, tuple(widths), rngs=rngs)
    self.recurrent = context.recurrent_block(cfg, widths[0], rngs=rngs)

  def __call__(self, z: jax.Array, style: jax.Array | None = None) -> jax.Array:
    b = z.shape[0]
    z, emb = embed_style(self, z, style)
    h0, w0 = self.base_shape
    x = self.project(z).reshape(b, h0, w0, -1)  # [B, 4, 4, 16d]
    x = nnx.relu(film(self, x, emb, 0))
    x = context.apply(self.attention[0], context.apply(self.recurrent, x))
    for i, up in enumerate(self.ups[:-1]):
      x = nnx.relu(film(self, up(x), emb, i + 1))  # H, W *= 2, C /= 2
      x = context.apply(self.attention[i + 1], x)
    x = self.ups[-1](x)  # [B, F, K, C * planes]
    return jnp.tanh(x) if self.bounded else x


class SpecDiscriminator(nnx.Module):
  """SpecGAN critic: images [B, frames, bins, C * planes] (+ style) -> one logit per example [B]."""

  planes = 1  # images per audio channel, as the generator's

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    chans = [cfg.channels * self.planes] + layer_widths(cfg)[::-1]  # C, d, 2d, 4d, 8d, 16d
    self.downs = nnx.List([Downsample2d(ci, co, rngs=rngs) for ci, co in itertools.pairwise(chans)])
    h0, w0 = base_shape(cfg)
    feat = h0 * w0 * chans[-1]
    self.out, self.style_proj, self.classifier = critic_heads(cfg, feat, rngs=rngs)
    widths = tuple(chans[1:])
    self.attention = context.attention_blocks(cfg, placements(cfg).d, widths, rngs=rngs)
    self.recurrent = context.recurrent_block(cfg, chans[-1], rngs=rngs)

  def features(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """[B, F, K, C] -> flat features [B, 4 * 4 * 16d].

    `rng` is unused: the paper's SpecGAN has no phase shuffle (shifting an image in frequency
    would change its pitch). It is accepted so both critics share one signature.
    """
    del rng
    for down, attention in zip(self.downs, self.attention, strict=True):
      x = context.apply(attention, lrelu(down(x)))  # H, W /= 2, C *= 2
    x = context.apply(self.recurrent, x)  # over the last map's positions, frame by frame
    return x.reshape(x.shape[0], -1)

  def __call__(
    self, x: jax.Array, style: jax.Array | None, rng: jax.Array | None = None
  ) -> jax.Array:
    return self.logits(x, style, rng)[0]

  def logits(
    self, x: jax.Array, style: jax.Array | None, rng: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array | None]:
    """(realness logit [B], style head [B, cond_dim] with the AC-GAN head, else None)."""
    return critic_outputs(self, self.features(x, rng), style)


def spec_features(audio: jax.Array, mean: jax.Array, std: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Audio [B, T, C] -> normalised log-magnitude images [B, T // hop, n_fft // 2, C] in [-1, 1].

  Channels are folded into the batch so one STFT serves them all; `mean`, `std` [bins] are the
  corpus moments (channels pooled, see `audio_moments`).
  """
  b, t, c = audio.shape
  mono = audio.transpose(0, 2, 1).reshape(b * c, t)  # [B*C, T]
  log_mag = dsp.log_magnitude(mono, cfg.n_fft, cfg.hop)  # [B*C, F, K]
  x = dsp.normalize(log_mag, mean, std)
  return x.reshape(b, c, *x.shape[1:]).transpose(0, 2, 3, 1)  # [B, F, K, C]


def spec_to_waveform(
  images: jax.Array, mean: jax.Array, std: jax.Array, cfg: ModelConfig, seed: int = 0
) -> jax.Array:
  """Normalised images [B, F, K, C] -> audio [B, slice_len, C] in [-1, 1] by Griffin-Lim.

  Griffin-Lim's phase is only consistent, not bounded, so the result is clipped to the range
  real clips have.
  """
  b, f, k, c = images.shape
  mono = jnp.asarray(images).transpose(0, 3, 1, 2).reshape(b * c, f, k)  # [B*C, F, K]
  audio = dsp.spec_to_audio(
    mono,
    mean,
    std,
    n_iter=cfg.gl_iters,
    n_fft=cfg.n_fft,
    hop=cfg.hop,
    length=cfg.slice_len,
    seed=seed,
  )  # [B*C, T]
  audio = audio.reshape(b, c, -1).transpose(0, 2, 1)  # [B, T, C]
  return jnp.clip(audio, -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("n_fft", "hop"))
def _log_mags(audio: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """[N, T, C] -> log magnitudes [N, C, F, K]."""
  n, t, c = audio.shape
  log_mag = dsp.log_magnitude(audio.transpose(0, 2, 1).reshape(n * c, t), n_fft, hop)
  return log_mag.reshape(n, c, *log_mag.shape[1:])


def chunks(batches: Iterable[np.ndarray], chunk: int) -> Iterator[tuple[np.ndarray, int]]:
  """Regroups [N, T, C] arrays into (array [chunk, T, C], rows that are real) pieces.

  Rows are carried over between batches so only the very last piece is padded (with zeros),
  and every piece has one shape: the jitted STFT compiles once however the batches are sized.
  """
  pending: list[np.ndarray] = []
  held = 0
  for batch in batches:
    batch = np.asarray(batch, np.float32)
    while len(batch):
      take = batch[: chunk - held]
      batch = batch[len(take) :]
      pending.append(take)
      held += len(take)
      if held == chunk:
        yield np.concatenate(pending), chunk
        pending, held = [], 0
  if held:
    rest = np.concatenate(pending)
    pad = np.zeros((chunk - held, *rest.shape[1:]), rest.dtype)
    yield np.concatenate([rest, pad]), held


def audio_moments(
  batches: Iterable[np.ndarray], cfg: ModelConfig, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
  """Per-bin mean and std [n_fft // 2] (float32) of the log magnitudes of audio [N, T, C] batches.

  The statistics SpecGAN normalises with, channels pooled; computed chunk by chunk so a whole
  corpus never needs to be in memory.

  Raises:
    ValueError: if `batches` holds no clips.
  """

  def log_mags() -> Iterator[np.ndarray]:
    for piece, rows in chunks(batches, chunk):
      yield np.asarray(_log_mags(jnp.asarray(piece), cfg.n_fft, cfg.hop))[:rows]  # [n, C, F, K]

  mean, std = dsp.moments_from_batches(log_mags())
  return mean.astype(np.float32), std.astype(np.float32)
