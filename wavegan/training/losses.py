"""GAN objectives as small pure functions of the critic's logits.

Each `*_d` returns the discriminator's loss from logits on real [B] and generated [B] audio, each
`*_g` the generator's loss from logits on generated audio. The gradient penalty is separate so
any objective can use it; its weight comes from `OptimConfig.gp_weight`.

The extra critics' losses (`model.aux_discs`) take lists of logits and feature maps, one per
sub-discriminator: `AUX_LOSSES` names their D and G objectives; feature matching and the spectral
losses compare real and generated audio or activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from wavegan.dsp import stft_magnitude
from wavegan.models.critics import DEFAULT_RESOLUTIONS


def wgan_d(real: jax.Array, fake: jax.Array) -> jax.Array:
  """Wasserstein critic loss: E[D(G(z))] - E[D(x)] (Arjovsky et al.; Gulrajani et al.)."""
  return jnp.mean(fake) - jnp.mean(real)


def wgan_g(fake: jax.Array) -> jax.Array:
  return -jnp.mean(fake)


def hinge_d(real: jax.Array, fake: jax.Array) -> jax.Array:
  """Hinge loss (Lim & Ye; used by SAGAN/BigGAN and MelGAN)."""
  return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def hinge_g(fake: jax.Array) -> jax.Array:
  return -jnp.mean(fake)


def lsgan_d(real: jax.Array, fake: jax.Array) -> jax.Array:
  """Least-squares GAN (Mao et al.), the loss of HiFi-GAN's discriminators."""
  return 0.5 * jnp.mean((real - 1.0) ** 2) + 0.5 * jnp.mean(fake**2)


def lsgan_g(fake: jax.Array) -> jax.Array:
  return 0.5 * jnp.mean((fake - 1.0) ** 2)


def nonsaturating_d(real: jax.Array, fake: jax.Array) -> jax.Array:
  """The original GAN's cross-entropy with logits (Goodfellow et al.)."""
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def nonsaturating_g(fake: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-fake))


LOSSES: dict[
  str, tuple[Callable[[jax.Array, jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]
] = {
  "wgan-gp": (wgan_d, wgan_g),
  "hinge": (hinge_d, hinge_g),
  "lsgan": (lsgan_d, lsgan_g),
  "nonsaturating": (nonsaturating_d, nonsaturating_g),
}


def gradient_penalty(
  critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, rng: jax.Array
) -> jax.Array:
  """WGAN-GP's two-sided penalty E[(||grad D(x_hat)|| - 1)^2] at random interpolates.

  Args:
    critic: audio [B, T, C] (or SpecGAN images [B, F, K, C]) -> logits [B].
    real, fake: [B, ...], what the critic reads.
    rng: key for the interpolation weights, one per example.
  Returns:
    Scalar penalty.
  """
  eps = interpolation_weights(rng, real.shape[0], real.ndim).astype(real.dtype)
  return gradient_penalty_at(critic, real, fake, eps)


def interpolation_weights(rng: jax.Array, batch: int, ndim: int) -> jax.Array:
  """WGAN-GP's uniform interpolation weight per example, float32 [B, 1, ...] with `ndim` axes."""
  return jax.random.uniform(rng, (batch,) + (1,) * (ndim - 1), jnp.float32)


def gradient_penalty_at(
  critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, eps: jax.Array
) -> jax.Array:
  """`gradient_penalty` with given interpolation weights eps [B, 1, ...]."""
  x_hat = eps * real + (1.0 - eps) * fake  # [B, T, C]
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)  # [B, T, C]
  norms = jnp.sqrt(
    jnp.sum(grads.astype(jnp.float32) ** 2, axis=tuple(range(1, real.ndim))) + 1e-12
  )  # [B]
  return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data, the critic's gradient norm
  where the data is, pushed to zero (the caller weights it by gamma / 2).

  Args:
    critic: what the critic reads [B, ...] -> logits [B].
    real: [B, ...], real clips as the critic reads them.
  Returns:
    Scalar: the mean over examples of the squared gradient norm.
  """
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(real)  # [B, ...]
  return jnp.mean(jnp.sum(grads.astype(jnp.float32) ** 2, axis=tuple(range(1, real.ndim))))


# ---------------------------------------------------------------------------------------------
# Losses of the extra critics (`model.aux_discs`) and the generator's spectral loss


def feature_matching_loss(
  real_feats: Sequence[jax.Array], fake_feats: Sequence[jax.Array]
) -> jax.Array:
  """Mean over feature maps of mean |D_l(x) - D_l(G(z))| (MelGAN, HiFi-GAN); real is a constant."""
  terms = [
    jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
    for r, f in zip(real_feats, fake_feats, strict=True)
  ]
  return jnp.mean(jnp.stack(terms))


def _frobenius(x: jax.Array) -> jax.Array:
  # A tiny offset keeps the gradient finite (zero) where x == 0, e.g. identical signals.
  return jnp.sqrt(jnp.sum(x**2) + 1e-20)


def multi_resolution_stft_loss(
  real: jax.Array, fake: jax.Array, resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS
) -> jax.Array:
  """Sum over (n_fft, hop) of spectral convergence + log-magnitude L1 (Yamamoto et al. 2020).

  Args:
    real, fake: audio [B, T, C]; every channel is compared.
  Returns:
    Scalar: sum_r ||S_x| - |S_y||_F / ||S_x||_F + mean |log|S_x| - log|S_y||.
  """
  b, t, c = real.shape
  real = real.transpose(0, 2, 1).reshape(b * c, t)  # [B * C, T]
  fake = fake.transpose(0, 2, 1).reshape(b * c, t)
  total = jnp.zeros((), jnp.float32)
  for n_fft, hop in resolutions:
    mag_r = stft_magnitude(real, n_fft, hop)  # [B * C, F, bins]
    mag_f = stft_magnitude(fake, n_fft, hop)
    convergence = _frobenius(mag_r - mag_f) / _frobenius(mag_r)
    log_l1 = jnp.mean(jnp.abs(jnp.log(mag_r) - jnp.log(mag_f)))
    total = total + convergence + log_l1
  return total


def mean_feature_matching_loss(
  real_feats: Sequence[jax.Array], fake_feats: Sequence[jax.Array]
) -> jax.Array:
  """`feature_matching_loss` of the batch means (Salimans et al. 2016).

  A vocoder compares each fake with its own real clip; a GAN sampling from noise has no such pair,
  so G matches the real batch's mean activation of every feature map instead.
  """
  return feature_matching_loss(
    [jnp.mean(r, axis=0) for r in real_feats], [jnp.mean(f, axis=0) for f in fake_feats]
  )


def mean_spectrum_loss(
  real: jax.Array,
  fake: jax.Array,
  resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS,
  groups: jax.Array | None = None,
  frames: bool = False,
) -> jax.Array:
  """`multi_resolution_stft_loss` of average magnitude spectra (unpaired clips).

  Spectral convergence + log-magnitude L1 between the mean |STFT| over clips and frames of the
  real and the generated batch, summed over resolutions: it pulls G's long-term spectrum towards
  the corpus' without asking any one clip to copy another. With `groups`, each group's average is
  compared instead (a style's: its real and generated rows share the weight), and the groups'
  terms are averaged over those present in the batch. With `frames`, the average is over clips
  only, frame by frame (an average spectrogram: one-shots start at their onset, so it holds the
  decay as well as the spectrum).

  Args:
    real, fake: audio [B, T, C].
    resolutions: (n_fft, hop) pairs.
    groups: row weights [B, K] (e.g. one-hot styles; rows of real and fake alike), or None: one
      group of every row.
    frames: keep the frames apart instead of averaging them.
  Returns:
    Scalar.
  """
  if groups is None and not frames:
    return _batch_mean_spectrum_loss(real, fake, resolutions)
  b, t, c = real.shape
  w = jnp.ones((b, 1), jnp.float32) if groups is None else groups.astype(jnp.float32)  # [B, K]
  count = jnp.sum(w, axis=0)  # [K]
  present = count > 0
  n_present = jnp.maximum(jnp.sum(present), 1)
  denom = jnp.maximum(count, 1e-12)[:, None]
  total = jnp.zeros((), jnp.float32)
  for n_fft, hop in resolutions:

    def group_means(x, n_fft=n_fft, hop=hop):
      mag = stft_magnitude(x.transpose(0, 2, 1).reshape(b * c, t), n_fft, hop)  # [B * C, F, N]
      mag = jnp.mean(mag.reshape(b, c, -1), axis=1)  # per clip, over channels: [B, F * N]
      if not frames:
        mag = jnp.mean(mag.reshape(b, -1, n_fft // 2 + 1), axis=1)  # over frames: [B, N]
      return (w.T @ mag) / denom  # [K, F * N] or [K, N]

    mean_r, mean_f = group_means(real), group_means(fake)
    diff = mean_r - mean_f
    convergence = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-20) / jnp.sqrt(jnp.sum(mean_r**2, -1) + 1e-20)
    # absent groups read 0 / 0: their (finite) terms are masked out
    safe_r = jnp.where(present[:, None], mean_r, 1.0)
    safe_f = jnp.where(present[:, None], mean_f, 1.0)
    log_l1 = jnp.mean(jnp.abs(jnp.log(safe_r) - jnp.log(safe_f)), -1)
    total = total + jnp.sum(jnp.where(present, convergence + log_l1, 0.0)) / n_present
  return total


def _batch_mean_spectrum_loss(
  real: jax.Array, fake: jax.Array, resolutions: Sequence[tuple[int, int]]
) -> jax.Array:
  """`mean_spectrum_loss` of one group: every row of real and fake."""
  b, t, c = real.shape
  real = real.transpose(0, 2, 1).reshape(b * c, t)  # [B * C, T]
  fake = fake.transpose(0, 2, 1).reshape(fake.shape[0] * c, t)
  total = jnp.zeros((), jnp.float32)
  for n_fft, hop in resolutions:
    mag_r = jnp.mean(stft_magnitude(real, n_fft, hop), axis=(0, 1))  # [bins]
    mag_f = jnp.mean(stft_magnitude(fake, n_fft, hop), axis=(0, 1))
    convergence = _frobenius(mag_r - mag_f) / _frobenius(mag_r)
    total = total + convergence + jnp.mean(jnp.abs(jnp.log(mag_r) - jnp.log(mag_f)))
  return total


def hinge_d_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]) -> jax.Array:
  """`hinge_d` per sub-discriminator, summed."""
  return sum(hinge_d(r, f) for r, f in zip(real_logits, fake_logits, strict=True))


def hinge_g_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """`hinge_g` per sub-discriminator, summed."""
  return sum(hinge_g(f) for f in fake_logits)


def lsgan_d_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]) -> jax.Array:
  """`lsgan_d` (0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]) per sub-discriminator, summed."""
  return sum(lsgan_d(r, f) for r, f in zip(real_logits, fake_logits, strict=True))


def lsgan_g_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """`lsgan_g` (0.5 E[(D(G(z)) - 1)^2]) per sub-discriminator, summed."""
  return sum(lsgan_g(f) for f in fake_logits)


AUX_LOSSES = {"hinge": (hinge_d_loss, hinge_g_loss), "lsgan": (lsgan_d_loss, lsgan_g_loss)}
