"""GAN objectives as small pure functions of the critic's logits.

Each `*_d` returns the discriminator's loss from logits on real [B] and generated [B] audio, each
`*_g` the generator's loss from logits on generated audio. The gradient penalty is separate so
any objective can use it; its weight comes from `OptimConfig.gp_weight`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


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
