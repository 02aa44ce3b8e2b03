"""The phase-aware spectral kinds: complex STFT planes, and log-magnitude + instantaneous frequency.

SpecGAN models the log magnitude only and guesses a phase with Griffin-Lim, which smears attacks.
These two kinds model the phase as well, so an inverse STFT turns their images into audio exactly:

* `complex`: the real and imaginary planes of the STFT (Nistal et al. 2021 compared it with the
  others on one-shot instrument notes and drums).
* `ifspec`: GANSynth's (Engel et al. 2019) log magnitude and instantaneous frequency, the phase's
  frame-to-frame difference wrapped into [-1, 1); a cumulative sum along frames gives the phase
  back.

Both read `dsp.packed_stft`: centred Hann frames every `hop` samples, T // hop frames, n_fft // 2
bins with the Nyquist value packed into the DC bin, 128 x 128 at 16384 samples and n_fft 256, hop
128, like SpecGAN's images. Every audio channel becomes 2 planes, so G and D are SpecGAN's networks
with 2C image channels. Each plane is standardised per frequency bin with the corpus' mean and std
(`plane_moments`, kept with the run like SpecGAN's moments) and never clipped, so G's output is
linear rather than tanh: a real clip's images are within reach, and the round trip audio -> images
-> audio is exact up to float32 rounding (bar the faded last samples, `dsp.overlap_envelope`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from wavegan import dsp
from wavegan.config import ModelConfig
from wavegan.models import specgan

PLANES = 2  # images per audio channel
LOG_EPS = 1e-6  # log(|X| + eps): the log magnitude of silence stays finite


class PlanesGenerator(specgan.SpecGenerator):
  """SpecGAN's generator with 2 linear planes per audio channel: [B, F, K, 2C]."""

  planes = PLANES
  bounded = False


class PlanesDiscriminator(specgan.SpecDiscriminator):
  """SpecGAN's critic over 2 planes per audio channel: [B, F, K, 2C]."""

  planes = PLANES


def _to_planes(spec: jax.Array, kind: str) -> jax.Array:
  """Packed spectra [..., F, K] (complex) -> the kind's 2 planes [..., 2, F, K]."""
  if kind == "complex":
    return jnp.stack([jnp.real(spec), jnp.imag(spec)], -3)
  log_mag = jnp.log(jnp.abs(spec) + LOG_EPS)
  return jnp.stack([log_mag, dsp.instantaneous_frequency(jnp.angle(spec))], -3)


def _from_planes(planes: jax.Array, kind: str, n_fft: int) -> jax.Array:
  """Inverse of `_to_planes`: [..., 2, F, K] -> packed spectra [..., F, K] (complex64).

  Audio in [-1, 1] has |X| <= n_fft / 2 in every bin (sqrt(2) times that in the packed DC bin),
  so each plane is capped where no clip's can reach (real and imaginary parts at +-n_fft, the log
  magnitude at log(n_fft)), and the instantaneous frequency, which only counts modulo 2, is
  wrapped into [-1, 1) first: a generator's absurd value can neither overflow (`exp`, the phase
  sum, the overlap-add) nor reach the audio as anything but a loud, clipped frame.
  """
  a, b = planes[..., 0, :, :], planes[..., 1, :, :]
  if kind == "complex":
    return jax.lax.complex(jnp.clip(a, -n_fft, n_fft), jnp.clip(b, -n_fft, n_fft))
  mag = jnp.exp(jnp.minimum(a, np.log(n_fft))) - LOG_EPS
  freq = jnp.remainder(jnp.clip(b, -1e6, 1e6) + 1.0, 2.0) - 1.0
  return jnp.maximum(mag, 0.0) * jnp.exp(1j * dsp.phase_from_frequency(freq))


def audio_planes(audio: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Audio [B, T, C] -> the kind's raw planes [B, C, 2, F, K] (float32), before standardising."""
  b, t, c = audio.shape
  mono = audio.astype(jnp.float32).transpose(0, 2, 1).reshape(b * c, t)  # [B*C, T]
  planes = _to_planes(dsp.packed_stft(mono, cfg.n_fft, cfg.hop), cfg.kind)  # [B*C, 2, F, K]
  return planes.reshape(b, c, *planes.shape[1:])


def _stats(mean: jax.Array, std: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Stored flat [2 * K] moments -> [2, 1, K], broadcasting over [.., 2, F, K]."""
  return mean.reshape(PLANES, 1, -1), std.reshape(PLANES, 1, -1)


def features(audio: jax.Array, mean: jax.Array, std: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Audio [B, T, C] -> standardised images [B, T // hop, n_fft // 2, 2C] (channel c's planes
  at 2c and 2c + 1), what the critic reads."""
  m, s = _stats(mean, std)
  x = (audio_planes(audio, cfg) - m) / s  # [B, C, 2, F, K]
  b, c, p, f, k = x.shape
  return x.transpose(0, 3, 4, 1, 2).reshape(b, f, k, c * p)


def to_waveform(images: jax.Array, mean: jax.Array, std: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Inverse of `features`: images [B, F, K, 2C] -> audio [B, F * hop, C] in [-1, 1].

  An inverse STFT (after a cumulative sum of the instantaneous frequency for `ifspec`), jitted
  with G; clipped to the range real clips have, as SpecGAN's output is.
  """
  b, f, k, cp = images.shape
  c = cp // PLANES
  x = images.astype(jnp.float32).reshape(b, f, k, c, PLANES).transpose(0, 3, 4, 1, 2)
  m, s = _stats(mean, std)
  spec = _from_planes(x * s + m, cfg.kind, cfg.n_fft)  # [B, C, F, K]
  audio = dsp.packed_istft(spec.reshape(b * c, f, k), cfg.n_fft, cfg.hop)  # [B*C, T]
  return jnp.clip(audio.reshape(b, c, -1).transpose(0, 2, 1), -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _flat_planes(audio: jax.Array, cfg: ModelConfig) -> jax.Array:
  """[N, T, C] -> raw planes [N, C, F, 2 * K] (plane-major last axis, as the moments are kept)."""
  x = audio_planes(audio, cfg)  # [N, C, 2, F, K]
  return x.transpose(0, 1, 3, 2, 4).reshape(*x.shape[:2], x.shape[3], -1)


def plane_moments(
  batches: Iterable[np.ndarray], cfg: ModelConfig, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
  """Per-plane, per-bin mean and std, flat [2 * K] (plane-major), over audio [N, T, C] batches.

  Streamed in fixed-shape chunks (one compile), channels pooled, as SpecGAN's moments.

  Raises:
    ValueError: if `batches` holds no clips.
  """

  def planes():
    for piece, rows in specgan.chunks(batches, chunk):
      yield np.asarray(_flat_planes(jnp.asarray(piece), cfg))[:rows]

  mean, std = dsp.moments_from_batches(planes())
  return mean.astype(np.float32), std.astype(np.float32)
