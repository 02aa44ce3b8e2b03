"""The GAN update as one pure, jitted function: n_critic D updates, then one G update, then EMA.

Parameters and optimiser states are plain pytrees (nested dicts of arrays) so the whole
`GANState` checkpoints as is. The step runs under a 1-D device mesh: the batch is split over the
`data` axis and parameters are replicated, so XLA inserts the gradient all-reduce itself. On one
device this is an ordinary jit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wavegan import losses
from wavegan.config import Config
from wavegan.models import Discriminator, Generator, sample_latents

Metrics = dict[str, jax.Array]
DATA_AXIS = "data"


@flax.struct.dataclass
class GANState:
  step: jax.Array          # int32 [], number of G updates done
  g_params: Any
  d_params: Any
  ema_params: Any          # EMA of g_params, used for synthesis
  g_opt: Any
  d_opt: Any


@dataclasses.dataclass(frozen=True)
class Models:
  """Static structure of G and D (NNX graph definitions) plus the optimisers, built once per run."""

  g_graph: Any
  d_graph: Any
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation

  def generator(self, params: Any) -> Generator:
    return nnx.merge(self.g_graph, params)

  def discriminator(self, params: Any) -> Discriminator:
    return nnx.merge(self.d_graph, params)


def build(cfg: Config, seed: int | None = None) -> tuple[Models, GANState]:
  """Creates G, D, their optimisers and the initial state; deterministic in `seed`."""
  seed = cfg.train.seed if seed is None else seed
  g_key, d_key = jax.random.split(jax.random.key(seed))
  g_graph, g_params = nnx.split(Generator(cfg.model, rngs=nnx.Rngs(params=g_key)), nnx.Param)
  d_graph, d_params = nnx.split(Discriminator(cfg.model, rngs=nnx.Rngs(params=d_key)), nnx.Param)
  g_params, d_params = nnx.to_pure_dict(g_params), nnx.to_pure_dict(d_params)
  o = cfg.optim
  g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2)
  d_tx = optax.adam(o.d_lr, b1=o.b1, b2=o.b2)
  state = GANState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      d_params=d_params,
      ema_params=jax.tree.map(jnp.copy, g_params),
      g_opt=g_tx.init(g_params),
      d_opt=d_tx.init(d_params),
  )
  return Models(g_graph, d_graph, g_tx, d_tx), state


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
  """Warm-up so the EMA tracks G closely early on: min(decay, (1 + t) / (10 + t))."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def make_train_step(models: Models, cfg: Config, mesh: Mesh | None = None
                    ) -> Callable[[GANState, jax.Array, jax.Array], tuple[GANState, Metrics]]:
  """Returns `step(state, real [n_critic, B, T, C], styles [n_critic, B]) -> (state, metrics)`.

  Each D update takes its own real batch and fresh latents, as in the authors' code. All
  randomness comes from `fold_in(key(seed), step)`, so a resumed run repeats an uninterrupted one.
  """
  d_loss_fn, g_loss_fn = losses.LOSSES[cfg.optim.loss]
  o, m = cfg.optim, cfg.model
  base_key = jax.random.key(cfg.train.seed + 1)
  conditional = m.conditional
  batch_spec = NamedSharding(mesh, P(DATA_AXIS)) if mesh is not None else None

  def shard_batch(x: jax.Array) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, batch_spec) if batch_spec is not None else x

  def generate(g_params: Any, z: jax.Array, style: jax.Array | None) -> jax.Array:
    return models.generator(g_params)(z, style if conditional else None)

  def critic(d_params: Any, x: jax.Array, style: jax.Array | None, rng: jax.Array) -> jax.Array:
    return models.discriminator(d_params)(x, style if conditional else None, rng)

  def critic_classes(d_params, x, style, rng) -> tuple[jax.Array, jax.Array | None]:
    return models.discriminator(d_params).logits(x, style if conditional else None, rng)

  def conditioning(ids: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Style ids [B] -> (mixing weights [B, S], kept [B]); a share of rows get no style at all."""
    if not conditional:
      return ids, jnp.ones(ids.shape, jnp.float32)
    kept = jnp.ones(ids.shape, jnp.float32)
    if o.uncond_share > 0:
      kept = (jax.random.uniform(rng, ids.shape) >= o.uncond_share).astype(jnp.float32)
    return jax.nn.one_hot(ids, m.num_styles) * kept[:, None], kept

  def class_loss(classes: jax.Array | None, ids: jax.Array, kept: jax.Array) -> jax.Array:
    """AC-GAN cross-entropy of the style logits on the rows that have a style."""
    if classes is None:
      return jnp.zeros(())
    ce = optax.softmax_cross_entropy_with_integer_labels(classes, ids)        # [B]
    return jnp.sum(ce * kept) / jnp.maximum(jnp.sum(kept), 1.0)

  def d_objective(d_params, g_params, real, ids, rng):
    kz, kr, kf, kg, ke, kc = jax.random.split(rng, 6)
    style, kept = conditioning(ids, kc)
    z = shard_batch(sample_latents(kz, real.shape[0], m.latent_dim))
    fake = jax.lax.stop_gradient(generate(g_params, z, style))            # [B, T, C]
    d_real, c_real = critic_classes(d_params, real, style, kr)            # [B], [B, S]
    d_fake, _ = critic_classes(d_params, fake, style, kf)
    adv = d_loss_fn(d_real, d_fake)
    gp = jnp.zeros(())
    if o.gp_weight > 0:
      gp = losses.gradient_penalty(lambda x: critic(d_params, x, style, kg), real, fake, ke)
    ac = class_loss(c_real, ids, kept)  # D learns styles from real clips only
    metrics = {"d/adv": adv, "d/gp": gp, "d/real": jnp.mean(d_real), "d/fake": jnp.mean(d_fake)}
    if c_real is not None:
      metrics["d/ac"] = ac
    return adv + o.gp_weight * gp + o.ac_weight * ac, metrics

  def g_objective(g_params, d_params, ids, rng):
    kz, kd, kc = jax.random.split(rng, 3)
    style, kept = conditioning(ids, kc)
    z = shard_batch(sample_latents(kz, ids.shape[0], m.latent_dim))
    fake = generate(g_params, z, style)
    d_fake, c_fake = critic_classes(d_params, fake, style, kd)
    adv = g_loss_fn(d_fake)
    ac = class_loss(c_fake, ids, kept)
    metrics = {"g/adv": adv}
    if c_fake is not None:
      metrics["g/ac"] = ac
    return adv + o.ac_weight * ac, metrics

  def step(state: GANState, real: jax.Array, styles: jax.Array) -> tuple[GANState, Metrics]:
    rng = jax.random.fold_in(base_key, state.step)
    d_rng, g_rng = jax.random.split(rng)
    n_critic = real.shape[0]

    def d_update(carry, xs):
      d_params, d_opt = carry
      x, y, key = xs
      (loss, metrics), grads = jax.value_and_grad(d_objective, has_aux=True)(
          d_params, state.g_params, shard_batch(x), shard_batch(y), key)
      updates, d_opt = models.d_tx.update(grads, d_opt, d_params)
      metrics = {**metrics, "d/loss": loss, "d/grad_norm": optax.tree.norm(grads)}
      return (optax.apply_updates(d_params, updates), d_opt), metrics

    (d_params, d_opt), d_metrics = jax.lax.scan(
        d_update, (state.d_params, state.d_opt), (real, styles, jax.random.split(d_rng, n_critic)))
    d_metrics = jax.tree.map(jnp.mean, d_metrics)                          # mean over critic steps

    (g_loss, g_metrics), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
        state.g_params, d_params, shard_batch(styles[-1]), g_rng)
    updates, g_opt = models.g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    decay = ema_decay(state.step, o.ema_decay)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, g_params)

    metrics = {**d_metrics, **g_metrics, "g/loss": g_loss, "g/grad_norm": optax.tree.norm(g_grads)}
    if o.loss == "wgan-gp":
      metrics["d/wdist"] = d_metrics["d/real"] - d_metrics["d/fake"]
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              ema_params=ema, g_opt=g_opt, d_opt=d_opt)
    return new_state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  replicated = NamedSharding(mesh, P())
  batch_in = NamedSharding(mesh, P(None, DATA_AXIS))                      # [n_critic, B, ...]
  return jax.jit(step, in_shardings=(replicated, batch_in, batch_in),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def data_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh over every device (all hosts' devices under jax.distributed)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(devices, (DATA_AXIS,))


def check_batch(batch_size: int, mesh: Mesh) -> None:
  n = mesh.size
  if batch_size % n:
    raise ValueError(f"train.batch_size={batch_size} does not divide over {n} devices; "
                     f"use a multiple of {n}")
