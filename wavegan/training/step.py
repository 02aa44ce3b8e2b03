"""The GAN update as one pure, jitted function: n_critic D updates, then one G update, then EMA.

Parameters and optimiser states are plain pytrees (nested dicts of arrays) so the whole
`GANState` checkpoints as is. The step runs under a 1-D device mesh: the batch is split over the
`data` axis and parameters are replicated, so XLA inserts the gradient all-reduce itself. On one
device this is an ordinary jit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wavegan.config import Config, ModelConfig
from wavegan.models import critics as aux_lib
from wavegan.models.waveform import Discriminator, Generator, sample_latents, style_vector
from wavegan.training import losses

Metrics = dict[str, jax.Array]
DATA_AXIS = "data"


@flax.struct.dataclass
class GANState:
  step: jax.Array  # int32 [], number of G updates done
  g_params: Any
  d_params: Any
  ema_params: Any  # EMA of g_params, used for synthesis
  g_opt: Any
  d_opt: Any


@dataclasses.dataclass(frozen=True)
class Models:
  """Static structure of G and D (NNX graph definitions) plus the optimisers, built once per run.

  With extra discriminators (`model.aux_discs`) the D parameters are `{"main": ..., "aux": ...}`;
  without them they are the main critic's alone, as in runs from before the extra critics.
  """

  g_graph: Any
  d_graph: Any
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  aux_graph: Any = None

  def generator(self, params: Any) -> Generator:
    return nnx.merge(self.g_graph, params)

  def discriminator(self, params: Any) -> Discriminator:
    return nnx.merge(self.d_graph, params["main"] if self.aux_graph is not None else params)

  def aux(self, params: Any) -> aux_lib.AuxDiscriminators:
    return nnx.merge(self.aux_graph, params["aux"])


def model_classes(m: ModelConfig) -> tuple[type, type]:
  """(generator, critic) classes of `model.kind`."""
  if m.kind == "specgan":
    from wavegan.models.specgan import SpecDiscriminator, SpecGenerator

    return SpecGenerator, SpecDiscriminator
  return Generator, Discriminator


def _pure(module: nnx.Module) -> tuple[Any, Any]:
  graph, params = nnx.split(module, nnx.Param)
  return graph, nnx.to_pure_dict(params)


def build(cfg: Config, seed: int | None = None) -> tuple[Models, GANState]:
  """Creates G, D, their optimisers and the initial state; deterministic in `seed`."""
  seed = cfg.train.seed if seed is None else seed
  g_key, d_key, a_key = jax.random.split(jax.random.key(seed), 3)
  g_cls, d_cls = model_classes(cfg.model)
  g_graph, g_params = _pure(g_cls(cfg.model, rngs=nnx.Rngs(params=g_key)))
  d_graph, d_params = _pure(d_cls(cfg.model, rngs=nnx.Rngs(params=d_key)))
  aux_graph = None
  if cfg.model.aux_names:
    aux_graph, aux_params = _pure(
      aux_lib.AuxDiscriminators(
        cfg.model.aux_names, cfg.model.channels, cfg.model.aux_width, rngs=nnx.Rngs(params=a_key)
      )
    )
    d_params = {"main": d_params, "aux": aux_params}
  o = cfg.optim
  g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2, eps=o.eps)
  d_tx = optax.adam(o.d_lr, b1=o.b1, b2=o.b2, eps=o.eps)
  state = GANState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_params,
    d_params=d_params,
    ema_params=jax.tree.map(jnp.copy, g_params),
    g_opt=g_tx.init(g_params),
    d_opt=d_tx.init(d_params),
  )
  return Models(g_graph, d_graph, g_tx, d_tx, aux_graph), state


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
  """Warm-up so the EMA tracks G closely early on: min(decay, (1 + t) / (10 + t))."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def make_train_step(
  models: Models, cfg: Config, mesh: Mesh | None = None, moments: tuple[Any, Any] | None = None
) -> Callable[[GANState, jax.Array, jax.Array], tuple[GANState, Metrics]]:
  """Returns `step(state, real [n_critic, B, T, C], styles [n_critic, B, ...]) -> (state, metrics)`.

  `styles` is any form `models.style_vector` accepts: ids [n_critic, B] or [n_critic, B, K], or
  style vectors [n_critic, B, cond_dim]. SpecGAN runs need `moments` (mean, std [bins]): the real
  clips become normalised log-magnitude images inside the step.

  Each D update takes its own real batch and fresh latents, as in the authors' code. All
  randomness comes from `fold_in(key(seed), step)`, so a resumed run repeats an uninterrupted one.
  """
  cfg.compute.check_accumulation(cfg.model, cfg.optim)
  d_loss_fn, g_loss_fn = losses.LOSSES[cfg.optim.loss]
  aux_d_loss, aux_g_loss = losses.AUX_LOSSES[cfg.optim.aux_loss]
  o, m = cfg.optim.resolved(), cfg.model
  base_key = jax.random.key(cfg.train.seed + 1)
  conditional = m.conditional
  has_aux = models.aux_graph is not None
  batch_spec = NamedSharding(mesh, P(DATA_AXIS)) if mesh is not None else None
  if m.kind == "specgan":
    if moments is None:
      raise ValueError("a specgan step needs the corpus' STFT moments")
    from wavegan.models.specgan import spec_features

    mean, std = (jnp.asarray(v, jnp.float32) for v in moments)

  def shard_batch(x: jax.Array) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, batch_spec) if batch_spec is not None else x

  def as_input(real: jax.Array) -> jax.Array:
    """Real audio [B, T, C] -> what the critic reads (the audio, or SpecGAN's images)."""
    return spec_features(real, mean, std, m) if m.kind == "specgan" else real

  cdt = jnp.bfloat16 if cfg.compute.dtype == "bfloat16" else jnp.float32
  accum = cfg.compute.grad_accum

  def compute(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn(params, x, *rest) run in the compute dtype (f32 parameters cast on the way in, the
    results cast back to f32), its activations recomputed in the backward pass with remat."""

    def wrapped(params, x, *rest):
      cast = lambda t: jax.tree.map(
        lambda a: a.astype(cdt) if jnp.issubdtype(a.dtype, jnp.floating) else a, t
      )
      out = fn(cast(params), x.astype(cdt), *cast(rest))
      return jax.tree.map(lambda a: a.astype(jnp.float32), out)

    if cdt == jnp.float32 and not cfg.compute.remat:
      return fn
    return jax.checkpoint(wrapped) if cfg.compute.remat else wrapped

  @compute
  def generate(g_params: Any, z: jax.Array, style: jax.Array | None) -> jax.Array:
    return models.generator(g_params)(z, style if conditional else None)

  @compute
  def critic(d_params: Any, x: jax.Array, style: jax.Array | None, rng: jax.Array) -> jax.Array:
    return models.discriminator(d_params)(x, style if conditional else None, rng)

  @compute
  def critic_classes(d_params, x, style, rng) -> tuple[jax.Array, jax.Array | None]:
    return models.discriminator(d_params).logits(x, style if conditional else None, rng)

  @compute
  def aux_critics(d_params, x):
    return models.aux(d_params)(x)

  def kept_rows(b: int, rng: jax.Array) -> jax.Array:
    """1 for rows trained with their style, 0 for the `optim.uncond_share` trained without [B]."""
    if not conditional or o.uncond_share <= 0:
      return jnp.ones((b,), jnp.float32)
    return (jax.random.uniform(rng, (b,)) >= o.uncond_share).astype(jnp.float32)

  def conditioning(styles: jax.Array, kept: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Styles -> (vector given to G and D [B, D], full vector [B, D]); dropped rows get zeros."""
    if not conditional:
      return styles, styles
    vec = style_vector(styles, m)  # [B, D]
    return vec * kept[:, None], vec

  def styled(kept: jax.Array) -> jax.Array:
    """The class loss' denominator: the whole batch's rows with a style (at least 1) / accum, so
    the mean of the micro-batches' class losses is the whole batch's."""
    count = jnp.maximum(jnp.sum(kept), 1.0)
    return count if accum == 1 else count / accum

  def class_loss(
    head: jax.Array | None, vec: jax.Array, kept: jax.Array, count: jax.Array
  ) -> jax.Array:
    """AC-GAN loss on the rows that have a style: cross-entropy per label field, MSE per attribute."""
    if head is None:
      return jnp.zeros(())
    per_row, start = jnp.zeros(head.shape[:1]), 0
    for n in m.groups:
      per_row += optax.softmax_cross_entropy(head[:, start : start + n], vec[:, start : start + n])
      start += n
    if m.num_attributes:
      per_row += jnp.sum(jnp.square(head[:, start:] - vec[:, start:]), axis=-1)
    return jnp.sum(per_row * kept) / count

  # Per-example randomness is drawn for the whole batch and sliced into micro-batches; the keys of
  # the critic calls (phase shuffle: one shift per call) are shared by them. So accumulating
  # `compute.grad_accum` micro-batches gives the full batch's gradient, not another sample of it
  # (the class loss divides by the whole batch's count; `ComputeConfig.check_accumulation`
  # refuses the losses of batch statistics).

  def d_draws(
    rng: jax.Array, real: jax.Array
  ) -> tuple[dict[str, jax.Array], tuple[jax.Array, ...]]:
    kz, kr, kf, kg, ke, kc = jax.random.split(rng, 6)
    b = real.shape[0]
    ndim = 4 if m.kind == "specgan" else real.ndim  # what the critic reads: images or audio
    rows = {
      "z": sample_latents(kz, b, m.latent_dim),
      "kept": kept_rows(b, kc),
      "eps": losses.interpolation_weights(ke, b, ndim),
    }
    return rows, (kr, kf, kg, styled(rows["kept"]))

  def d_objective(d_params, g_params, batch, keys):
    real, styles, rows = batch["real"], batch["styles"], batch["rows"]
    kr, kf, kg, count = keys
    style, vec = conditioning(styles, rows["kept"])
    z = shard_batch(rows["z"])
    fake = jax.lax.stop_gradient(generate(g_params, z, style))  # [B, T, C] or image
    x_real = as_input(real)
    d_real, c_real = critic_classes(d_params, x_real, style, kr)  # [B], [B, D]
    d_fake, _ = critic_classes(d_params, fake, style, kf)
    adv = d_loss_fn(d_real, d_fake)
    gp = jnp.zeros(())
    if o.gp_weight > 0:
      gp = losses.gradient_penalty_at(
        lambda x: critic(d_params, x, style, kg), x_real, fake, rows["eps"]
      )
    ac = class_loss(c_real, vec, rows["kept"], count)  # D learns styles from real clips only
    metrics = {"d/adv": adv, "d/gp": gp, "d/real": jnp.mean(d_real), "d/fake": jnp.mean(d_fake)}
    if c_real is not None:
      metrics["d/ac"] = ac
    total = adv + o.gp_weight * gp + o.ac_weight * ac
    if has_aux:
      aux_adv = aux_d_loss(aux_critics(d_params, real)[0], aux_critics(d_params, fake)[0])
      metrics["d/aux"] = aux_adv
      total = total + aux_adv
    return total, metrics

  def g_draws(rng: jax.Array, styles: jax.Array) -> tuple[dict[str, jax.Array], tuple[jax.Array]]:
    kz, kd, kc = jax.random.split(rng, 3)
    b = styles.shape[0]
    rows = {"z": sample_latents(kz, b, m.latent_dim), "kept": kept_rows(b, kc)}
    return rows, (kd, styled(rows["kept"]))

  def g_objective(g_params, d_params, batch, keys):
    real, styles, rows = batch["real"], batch["styles"], batch["rows"]
    kd, count = keys
    style, vec = conditioning(styles, rows["kept"])
    fake = generate(g_params, shard_batch(rows["z"]), style)
    d_fake, c_fake = critic_classes(d_params, fake, style, kd)
    adv = g_loss_fn(d_fake)
    ac = class_loss(c_fake, vec, rows["kept"], count)
    metrics = {"g/adv": adv}
    if c_fake is not None:
      metrics["g/ac"] = ac
    total = adv + o.ac_weight * ac
    if has_aux:
      fake_logits, fake_feats = aux_critics(d_params, fake)
      real_feats = aux_critics(d_params, real)[1]
      aux_adv = aux_g_loss(fake_logits)
      fm = losses.mean_feature_matching_loss(real_feats, fake_feats)
      metrics.update({"g/aux": aux_adv, "g/fm": fm})
      total = total + o.aux_weight * aux_adv + o.fm_weight * fm
    if o.stft_weight > 0:
      spectrum = losses.mean_spectrum_loss(real, fake)
      metrics["g/stft"] = spectrum
      total = total + o.stft_weight * spectrum
    return total, metrics

  def value_and_grad(objective, params, other, batch, keys):
    """((loss, metrics), grads) of `objective` over the batch, in `accum` micro-batches."""
    fn = jax.value_and_grad(objective, has_aux=True)
    if accum == 1:
      return fn(params, other, jax.tree.map(shard_batch, batch), keys)
    micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

    def body(total, mb):
      out = fn(params, other, jax.tree.map(shard_batch, mb), keys)
      return jax.tree.map(jnp.add, total, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, params, other, first, keys)
    )
    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda x: x / accum, total)

  def step(state: GANState, real: jax.Array, styles: jax.Array) -> tuple[GANState, Metrics]:
    rng = jax.random.fold_in(base_key, state.step)
    d_rng, g_rng = jax.random.split(rng)
    n_critic = real.shape[0]

    def d_update(carry, xs):
      d_params, d_opt = carry
      x, y, key = xs
      rows, keys = d_draws(key, x)
      (loss, metrics), grads = value_and_grad(
        d_objective, d_params, state.g_params, {"real": x, "styles": y, "rows": rows}, keys
      )
      updates, d_opt = models.d_tx.update(grads, d_opt, d_params)
      metrics = {**metrics, "d/loss": loss, "d/grad_norm": optax.tree.norm(grads)}
      return (optax.apply_updates(d_params, updates), d_opt), metrics

    (d_params, d_opt), d_metrics = jax.lax.scan(
      d_update, (state.d_params, state.d_opt), (real, styles, jax.random.split(d_rng, n_critic))
    )
    d_metrics = jax.tree.map(jnp.mean, d_metrics)  # mean over critic steps

    rows, keys = g_draws(g_rng, styles[-1])
    (g_loss, g_metrics), g_grads = value_and_grad(
      g_objective,
      state.g_params,
      d_params,
      {"real": real[-1], "styles": styles[-1], "rows": rows},
      keys,
    )
    updates, g_opt = models.g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    decay = ema_decay(state.step, o.ema_decay)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, g_params)

    metrics = {**d_metrics, **g_metrics, "g/loss": g_loss, "g/grad_norm": optax.tree.norm(g_grads)}
    if o.loss == "wgan-gp":
      metrics["d/wdist"] = d_metrics["d/real"] - d_metrics["d/fake"]
    new_state = state.replace(
      step=state.step + 1,
      g_params=g_params,
      d_params=d_params,
      ema_params=ema,
      g_opt=g_opt,
      d_opt=d_opt,
    )
    return new_state, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  replicated = NamedSharding(mesh, P())
  batch_in = NamedSharding(mesh, P(None, DATA_AXIS))  # [n_critic, B, ...]
  return jax.jit(
    step,
    in_shardings=(replicated, batch_in, batch_in),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def data_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh over every device (all hosts' devices under jax.distributed)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(devices, (DATA_AXIS,))


def check_batch(batch_size: int, mesh: Mesh, grad_accum: int = 1) -> None:
  """Every device gets an equal share of every (micro-)batch, or a clear error."""
  n = mesh.size
  if batch_size % (n * grad_accum):
    what = f"{grad_accum} micro-batches over {n} devices" if grad_accum > 1 else f"{n} devices"
    raise ValueError(
      f"train.batch_size={batch_size} does not divide into {what}; "
      f"use a multiple of {n * grad_accum}"
    )
