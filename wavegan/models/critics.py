"""Auxiliary waveform discriminators (MelGAN, HiFi-GAN, UnivNet), in Flax NNX.

Each discriminator takes audio [B, T, C] (channels-last, any T) and returns `(logits, features)`:
one logits tensor [B, N_i] per sub-discriminator, and every sub-discriminator's hidden activations
(after their leaky ReLU, the logits themselves excluded) in one flat list, for feature matching.

* `MultiScaleDiscriminator` (Kumar et al. 2019): one 1-D conv stack per scale 1, 1/2, 1/4.
* `MultiPeriodDiscriminator` (Kong et al. 2020): (k, 1) 2-D convs over the waveform folded by
  period p. They never mix the period axis, so it folds into the batch: 1-D convs over [B*p, T/p, C].
* `MultiResolutionSTFTDiscriminator` (Jang et al. 2021; Defossez et al. 2022): 2-D convs over
  log-magnitude spectrograms. A (3, k) kernel with stride (1, s) runs as a 1-D conv over bins with
  the 3 neighbouring frames stacked as channels.

Every convolution is a `Downsample1d` ('SAME'; a stride-1 conv is its s = 1 case), so all of them,
and all their derivatives, are stride-1 `conv1d`s, which stay fast inside XLA:CPU training loops.
Weight and spectral normalization (used by the papers) are left out; grouped convs are not used.

Style (`model.aux_cond`): as the main critic, each sub-discriminator can hear the style through a
`StyleHead` on the feature map its last layer reads, [B, N, C] over its N output positions: a
projection term <embed(style), h_n> added to every position's logit (Miyato & Koyama 2018), or
an AC-GAN classifier of the positions' mean feature. Without one, an extra critic only asks
"does this sound like the corpus?", and G can satisfy it with the wrong style.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from wavegan.config import AUX_CONDS
from wavegan.dsp import stft_magnitude
from wavegan.models.layers import Downsample1d, lrelu


class Outputs(NamedTuple):
  """What the extra critics return for audio [B, T, C]."""

  logits: list[jax.Array]  # one [B, N_i] per sub-discriminator
  feats: list[jax.Array]  # every sub-discriminator's hidden activations
  classes: tuple[jax.Array, ...] = ()  # with AC-GAN heads: one style head [B, cond_dim] each


DEFAULT_PERIODS = (2, 3, 5, 7, 11)
DEFAULT_RESOLUTIONS = ((512, 128), (1024, 256), (256, 64))  # (n_fft, hop); window = n_fft


# ---------------------------------------------------------------------------------------------
# Building blocks


def pad_to_multiple(
  x: jax.Array, multiple: int, axis: int = 1, mode: str = "constant"
) -> jax.Array:
  """Right-pads `axis` of x to a multiple of `multiple` ('constant' zeros or 'reflect')."""
  extra = -x.shape[axis] % multiple
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, mode=mode)


class Conv1d(nnx.Module):
  """'SAME' 1-D conv of any length, stride s: [B, L, C_in] -> [B, ceil(L / s), C_out].

  L is zero-padded on the right to a multiple of s, then `Downsample1d` runs the conv.
  """

  def __init__(self, c_in: int, c_out: int, kernel_len: int, stride: int = 1, *, rngs: nnx.Rngs):
    self.stride = stride
    self.conv = Downsample1d(c_in, c_out, kernel_len, stride, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(pad_to_multiple(x, self.stride))


class SpectralConv(nnx.Module):
  """'SAME' 2-D conv, kernel (kh, kw), stride (1, s): [B, F, W, C_in] -> [B, F, ceil(W / s), C_out].

  Runs as a 1-D conv over W whose input stacks the kh neighbouring frames as channels. Its kernel
  is stored as [kw, kh * C_in, C_out]: the 2-D kernel K[i, j, c, o] is `kernel[j, i * C_in + c, o]`.
  """

  def __init__(
    self, c_in: int, c_out: int, kernel: tuple[int, int], stride: int = 1, *, rngs: nnx.Rngs
  ):
    self.kh = kernel[0]
    self.conv = Conv1d(self.kh * c_in, c_out, kernel[1], stride, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, f, w, c = x.shape
    lo = (self.kh - 1) // 2
    xp = jnp.pad(x, ((0, 0), (lo, self.kh - 1 - lo), (0, 0), (0, 0)))  # [B, F + kh - 1, W, C]
    cols = jnp.concatenate([xp[:, i : i + f] for i in range(self.kh)], -1)  # [B, F, W, kh * C]
    y = self.conv(cols.reshape(b * f, w, self.kh * c))  # [B * F, W', C_out]
    return y.reshape(b, f, y.shape[1], -1)  # [B, F, W', C_out]


def conv_stack(layers: Sequence[nnx.Module], post: nnx.Module, x: jax.Array) -> Outputs:
  """Leaky-ReLU conv stack, then `post` to one channel: (logits [[B, N]], features)."""
  feats = []
  for layer in layers:
    x = lrelu(layer(x))
    feats.append(x)
  logits = post(x)  # [B, ..., 1]
  return Outputs([logits.reshape(x.shape[0], -1)], feats)  # [B, N]


class StyleHead(nnx.Module):
  """A sub-discriminator's style head on the map its last layer reads, h [B, N, C].

  "projection": logits [B, N] + <style @ embed, h_n> at every position n (embed [cond_dim, C],
  normal with std C^-1/2 like the main critic's); "acgan": a dense classifier of mean_n h_n
  [B, C] -> [B, cond_dim] (one logit per label-field entry, one value per attribute).
  """

  def __init__(self, channels: int, cond_dim: int, mode: str, *, rngs: nnx.Rngs):
    if mode not in AUX_CONDS[1:]:
      raise ValueError(f"style head {mode!r}: must be one of {AUX_CONDS[1:]}")
    self.proj, self.classifier = nnx.data(None), nnx.data(None)
    if mode == "projection":
      init = nnx.initializers.normal(channels**-0.5)
      self.proj = nnx.Param(init(rngs.params(), (cond_dim, channels)))
    else:
      self.classifier = nnx.Linear(channels, cond_dim, rngs=rngs)

  def __call__(self, out: Outputs, style: jax.Array | None) -> Outputs:
    """`out` of one sub-discriminator (one logits entry [B, N]; its last feature map holds N
    positions per clip) with the style heard; `style` [B, cond_dim] or None (unchanged)."""
    if style is None:
      return out
    (logits,) = out.logits
    h = out.feats[-1].reshape(logits.shape[0], -1, out.feats[-1].shape[-1])  # [B, N, C]
    if self.proj is not None:
      emb = (style.astype(jnp.float32) @ self.proj[...]).astype(h.dtype)  # [B, C]
      return Outputs([logits + jnp.einsum("bnc,bc->bn", h, emb)], out.feats)
    return Outputs(out.logits, out.feats, (self.classifier(jnp.mean(h, axis=1)),))


def style_head(channels: int, cond_dim: int, mode: str, *, rngs: nnx.Rngs) -> StyleHead | None:
  """A `StyleHead` for a map of `channels`, or None (no style: mode "none" or cond_dim 0)."""
  if mode == "none" or cond_dim == 0:
    return nnx.data(None)
  return StyleHead(channels, cond_dim, mode, rngs=rngs)


def with_style(head: StyleHead | None, out: Outputs, style: jax.Array | None) -> Outputs:
  """`out` through `head` (unchanged without a head)."""
  return out if head is None else head(out, style)


def avg_pool(x: jax.Array) -> jax.Array:
  """MelGAN's pooling between scales: mean over 4 samples, stride 2, 'SAME', padding not counted.

  [B, T, C] -> [B, ceil(T / 2), C]; y[m] = mean(x[2m - 1 : 2m + 3]) over the samples that exist.
  """

  def window_sum(v: jax.Array) -> jax.Array:
    v = jnp.pad(pad_to_multiple(v, 2), ((0, 0), (1, 1), (0, 0)))  # [B, T + 2, C]
    pairs = v.reshape(v.shape[0], -1, 2, v.shape[-1]).sum(2)  # [B, T / 2 + 1, C]
    return pairs[:, :-1] + pairs[:, 1:]  # [B, T / 2, C]

  counts = window_sum(jnp.ones((1, x.shape[1], 1), x.dtype))  # [1, T / 2, 1]
  return window_sum(x) / counts


# ---------------------------------------------------------------------------------------------
# Discriminators


class ScaleDiscriminator(nnx.Module):
  """One MelGAN sub-discriminator: [B, T, C] -> logits [[B, ceil(T / 256)]], 6 feature maps.

  Kernel-15 conv to `width` channels, four kernel-41 stride-4 convs (channels x4, capped at
  16 * width since the convs are not grouped), a kernel-5 conv, and a kernel-3 conv to 1 channel.
  """

  def __init__(
    self, channels: int, width: int, *, rngs: nnx.Rngs, cond_dim: int = 0, cond: str = "none"
  ):
    chans = [width * min(4**i, 16) for i in range(5)]  # w, 4w, 16w, 16w, 16w
    layers = [Conv1d(channels, width, 15, rngs=rngs)]
    layers += [Conv1d(ci, co, 41, 4, rngs=rngs) for ci, co in zip(chans[:-1], chans[1:])]
    layers += [Conv1d(chans[-1], chans[-1], 5, rngs=rngs)]
    self.layers = nnx.List(layers)
    self.post = Conv1d(chans[-1], 1, 3, rngs=rngs)
    self.style_head = style_head(chans[-1], cond_dim, cond, rngs=rngs)

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    return with_style(self.style_head, conv_stack(self.layers, self.post, x), style)


class MultiScaleDiscriminator(nnx.Module):
  """MelGAN's multi-scale discriminator: the same stack at scales 1, 1/2, 1/4 (Kumar et al. 2019).

  Audio [B, T, C] -> ([B, ceil(T / 256 / 2^k)] for k < num_scales, features).
  """

  def __init__(
    self,
    channels: int,
    width: int,
    num_scales: int = 3,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    self.scales = nnx.List(
      [
        ScaleDiscriminator(channels, width, rngs=rngs, cond_dim=cond_dim, cond=cond)
        for _ in range(num_scales)
      ]
    )

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    outs = []
    for k, disc in enumerate(self.scales):
      if k:
        x = avg_pool(x)  # T /= 2
      outs.append(disc(x, style))
    return merge_outputs(outs)


class PeriodDiscriminator(nnx.Module):
  """One HiFi-GAN sub-discriminator for period p: [B, T, C] -> logits [[B, p * ceil(T/p/81)]].

  Four (5, 1) stride-(3, 1) convs (w, 4w, 16w, 32w channels: HiFi-GAN's at w = 32), a (5, 1)
  conv and a (3, 1) conv to 1 channel, over the waveform folded to [B, T / p, p, C]. Features
  are [B, p, T', C'] (period-major).
  """

  def __init__(
    self,
    channels: int,
    width: int,
    period: int,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    self.period = period
    chans = [channels] + [width * m for m in (1, 4, 16, 32)]
    layers = [Conv1d(ci, co, 5, 3, rngs=rngs) for ci, co in zip(chans[:-1], chans[1:])]
    layers += [Conv1d(chans[-1], chans[-1], 5, rngs=rngs)]
    self.layers = nnx.List(layers)
    self.post = Conv1d(chans[-1], 1, 3, rngs=rngs)
    self.style_head = style_head(chans[-1], cond_dim, cond, rngs=rngs)

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    b, _, c = x.shape
    p = self.period
    x = pad_to_multiple(x, p, mode="reflect")  # [B, p * L, C]
    x = x.reshape(b, -1, p, c).transpose(0, 2, 1, 3).reshape(b * p, -1, c)  # [B * p, L, C]
    logits, feats, _ = conv_stack(self.layers, self.post, x)  # [[B * p, L']]
    feats = [f.reshape(b, p, *f.shape[1:]) for f in feats]  # [B, p, L', C']
    out = Outputs([logits[0].reshape(b, -1)], feats)  # [[B, p * L']]
    return with_style(self.style_head, out, style)


def merge_outputs(outs: Sequence[Outputs]) -> Outputs:
  """Several sub-discriminators' outputs as one: their lists concatenated in order."""
  return Outputs(
    [a for o in outs for a in o.logits],
    [a for o in outs for a in o.feats],
    tuple(a for o in outs for a in o.classes),
  )


def _concat_outputs(
  discs: Sequence[nnx.Module], x: jax.Array, style: jax.Array | None = None
) -> Outputs:
  """Every sub-discriminator's outputs, in one `Outputs`."""
  return merge_outputs([disc(x, style) for disc in discs])


class MultiPeriodDiscriminator(nnx.Module):
  """HiFi-GAN's multi-period discriminator (Kong et al. 2020): one `PeriodDiscriminator` a period."""

  def __init__(
    self,
    channels: int,
    width: int,
    periods: Sequence[int] = DEFAULT_PERIODS,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    self.periods = tuple(periods)
    self.discs = nnx.List(
      [
        PeriodDiscriminator(channels, width, p, rngs=rngs, cond_dim=cond_dim, cond=cond)
        for p in periods
      ]
    )

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    return _concat_outputs(self.discs, x, style)


class ResolutionDiscriminator(nnx.Module):
  """One STFT sub-discriminator: [B, T, C] -> logits [[B, (1 + T // hop) * ceil(bins / 8)]].

  The mono mix's log-magnitude STFT [B, frames, bins, 1] goes through a (3, 9) conv, three (3, 9)
  convs with stride (1, 2) over bins, a 3x3 conv (all `width` channels, as UnivNet's MRD) and a
  3x3 conv to 1 channel.
  """

  def __init__(
    self,
    width: int,
    n_fft: int,
    hop: int,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    self.n_fft, self.hop = n_fft, hop
    layers = [SpectralConv(1, width, (3, 9), rngs=rngs)]
    layers += [SpectralConv(width, width, (3, 9), 2, rngs=rngs) for _ in range(3)]
    layers += [SpectralConv(width, width, (3, 3), rngs=rngs)]
    self.layers = nnx.List(layers)
    self.post = SpectralConv(width, 1, (3, 3), rngs=rngs)
    self.style_head = style_head(width, cond_dim, cond, rngs=rngs)

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    mono = jnp.mean(x, axis=-1)  # [B, T]
    spec = jnp.log(stft_magnitude(mono, self.n_fft, self.hop))[..., None]  # [B, F, bins, 1]
    return with_style(self.style_head, conv_stack(self.layers, self.post, spec), style)


class MultiResolutionSTFTDiscriminator(nnx.Module):
  """Multi-resolution spectrogram discriminator (UnivNet's MRD; EnCodec's MS-STFTD on magnitudes).

  `channels` is accepted for a uniform signature: the input is mixed to mono first.
  """

  def __init__(
    self,
    channels: int,
    width: int,
    resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    del channels
    self.resolutions = tuple(tuple(r) for r in resolutions)
    self.discs = nnx.List(
      [
        ResolutionDiscriminator(width, n, h, rngs=rngs, cond_dim=cond_dim, cond=cond)
        for n, h in self.resolutions
      ]
    )

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    return _concat_outputs(self.discs, x, style)


AUX_DISCRIMINATORS = {
  "msd": MultiScaleDiscriminator,
  "mpd": MultiPeriodDiscriminator,
  "mrstft": MultiResolutionSTFTDiscriminator,
}


def build_aux_discriminators(
  names: tuple[str, ...],
  channels: int,
  width: int,
  *,
  rngs: nnx.Rngs,
  cond_dim: int = 0,
  cond: str = "none",
) -> dict[str, nnx.Module]:
  """{name: discriminator} with default settings, for names in `AUX_DISCRIMINATORS`; with `cond`
  "projection" or "acgan" and `cond_dim` > 0 every sub-discriminator has a `StyleHead`."""
  unknown = [n for n in names if n not in AUX_DISCRIMINATORS]
  if unknown:
    raise ValueError(
      f"unknown auxiliary discriminator(s) {unknown}: valid names are {sorted(AUX_DISCRIMINATORS)}"
    )
  return {
    n: AUX_DISCRIMINATORS[n](channels, width, rngs=rngs, cond_dim=cond_dim, cond=cond)
    for n in names
  }


class AuxDiscriminators(nnx.Module):
  """The configured extra discriminators as one: audio [B, T, C] (+ style vectors [B, cond_dim])
  -> every sub-discriminator's outputs."""

  def __init__(
    self,
    names: tuple[str, ...],
    channels: int,
    width: int,
    *,
    rngs: nnx.Rngs,
    cond_dim: int = 0,
    cond: str = "none",
  ):
    self.names = tuple(names)
    discs = build_aux_discriminators(
      self.names, channels, width, rngs=rngs, cond_dim=cond_dim, cond=cond
    )
    self.discs = nnx.List(list(discs.values()))

  def __call__(self, x: jax.Array, style: jax.Array | None = None) -> Outputs:
    return _concat_outputs(self.discs, x, style)
