"""The GAN update as one pure, jitted function: n_critic D updates, then one G update, then EMA.

Parameters and optimiser states are plain pytrees (nested dicts of arrays) so the whole
`GANState` checkpoints as is. The step runs under a 1-D device mesh: the batch is split over the
`data` axis and parameters are replicated, so XLA inserts the gradient all-reduce itself. On one
device this is an ordinary jit.

The step is composed of small pure functions, each usable (and tested) on its own:

  train_step
    critic_updates     n_critic D updates in a lax.scan, each on its own real batch
      critic_draws       the update's latents, style mask, GP weights, augmentation draws and
                         critic keys
      critic_objective   D's loss and metrics on one (micro-)batch
    generator_update   one G update against the updated D
      generator_draws
      generator_objective
    ema_update         the EMA of G's parameters used for synthesis
    (ADA)              `augment.ada_update` of the augmentation probability

With `augment` on, everything the critics read, real and generated, goes through
`wavegan.training.augment` with the state's probability `aug_p` (G learns through the ops).

`value_and_grad` runs an objective over `compute.grad_accum` micro-batches. Everything static (the
networks' structure, the optimisers, the config, the corpus statistics and the mesh) travels in a
`StepSpec`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wavegan import dsp
from wavegan.config import ComputeConfig, Config, ModelConfig, OptimConfig
from wavegan.models import critics as aux_lib
from wavegan.models.kinds import Arrays, kind_of
from wavegan.models.layers import conv_algorithm
from wavegan.models.waveform import Discriminator, Generator, sample_latents, style_vector
from wavegan.training import augment, losses

Metrics = dict[str, jax.Array]
Batch = dict[str, Any]  # {"real": [B, T, C], "styles": [B, ...], "rows": {name: [B, ...]}}
DATA_AXIS = "data"
# fold_in data of the augmentation draws: a stream of their own, so the other draws of an update
# are those of a run without augmentation (far above the split counts, which fold_in could repeat)
AUGMENT_STREAM = 0x617567


@flax.struct.dataclass
class GANState:
  step: jax.Array  # int32 [], number of G updates done
  g_params: Any
  d_params: Any
  ema_params: Any  # EMA of g_params, used for synthesis
  g_opt: Any
  d_opt: Any
  aug_p: jax.Array  # float32 [], the augmentation probability (`augment.p`, adapted with ADA)


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


def _pure(module: nnx.Module) -> tuple[Any, Any]:
  graph, params = nnx.split(module, nnx.Param)
  return graph, nnx.to_pure_dict(params)


def build(cfg: Config, seed: int | None = None) -> tuple[Models, GANState]:
  """Creates G, D, their optimisers and the initial state; deterministic in `seed`."""
  seed = cfg.train.seed if seed is None else seed
  g_key, d_key, a_key = jax.random.split(jax.random.key(seed), 3)
  kind = kind_of(cfg.model)
  g_cls, d_cls = kind.generator, kind.critic
  g_graph, g_params = _pure(g_cls(cfg.model, rngs=nnx.Rngs(params=g_key)))
  d_graph, d_params = _pure(d_cls(cfg.model, rngs=nnx.Rngs(params=d_key)))
  aux_graph = None
  if cfg.model.aux_names:
    aux_graph, aux_params = _pure(
      aux_lib.AuxDiscriminators(
        cfg.model.aux_names,
        cfg.model.channels,
        cfg.model.aux_width,
        rngs=nnx.Rngs(params=a_key),
        cond_dim=cfg.model.cond_dim,
        cond=cfg.model.aux_cond,
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
    aug_p=jnp.asarray(cfg.augment.p, jnp.float32),
  )
  return Models(g_graph, d_graph, g_tx, d_tx, aux_graph), state


# ---------------------------------------------------------------------------------------------
# What a step needs besides arrays


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The static pieces of a training step.

  Attributes:
    models: G's and D's structure and their optimisers.
    cfg: the run's config.
    stats: the model kind's corpus statistics as float32 arrays (`ModelKind.needs`); {} for a
      kind that needs none.
    mesh: the 1-D data mesh the batch is split over, or None (one device).
  """

  models: Models
  cfg: Config
  stats: Arrays = dataclasses.field(default_factory=dict)
  mesh: Mesh | None = None

  @property
  def accum(self) -> int:
    return self.cfg.compute.grad_accum


class Shared(NamedTuple):
  """What every micro-batch of an update shares (the per-example draws are split instead).

  Attributes:
    keys: keys of the critic calls (phase shuffle draws one shift per call).
    styled: the AC-GAN class loss' denominator: the whole batch's number of rows trained with
      their style (at least 1), divided by `compute.grad_accum`, so the mean of the micro-batches'
      class losses is the whole batch's.
    r1_due: D updates only: whether this one computes the lazy R1 penalty (bool []).
    aug_p: with `augment` on, the probability of each augmentation (float32 []); else None.
  """

  keys: tuple[jax.Array, ...]
  styled: jax.Array
  r1_due: jax.Array | None = None
  aug_p: jax.Array | None = None


def shard_batch(spec: StepSpec, x: jax.Array) -> jax.Array:
  """x [B, ...] split over the mesh's data axis (unchanged without a mesh)."""
  if spec.mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(spec.mesh, P(DATA_AXIS)))


def in_compute_dtype(fn: Callable[..., Any], compute: ComputeConfig) -> Callable[..., Any]:
  """`fn(params, x, *rest)` run in `compute.dtype` (f32 parameters cast on the way in, the results
  cast back to f32) with `compute.conv`'s convolutions, its activations recomputed in the backward
  pass when `compute.remat`."""
  cdt = jnp.bfloat16 if compute.dtype == "bfloat16" else jnp.float32

  def wrapped(params, x, *rest):
    with conv_algorithm(compute.conv):
      if cdt == jnp.float32:
        return fn(params, x, *rest)
      cast = lambda t: jax.tree.map(
        lambda a: a.astype(cdt) if jnp.issubdtype(a.dtype, jnp.floating) else a, t
      )
      out = fn(cast(params), x.astype(cdt), *cast(rest))
    return jax.tree.map(lambda a: a.astype(jnp.float32), out)

  return jax.checkpoint(wrapped) if compute.remat else wrapped


# ---------------------------------------------------------------------------------------------
# The networks, called in the compute dtype


def generate(spec: StepSpec, g_params: Any, z: jax.Array, style: jax.Array | None) -> jax.Array:
  """G(z [B, latent], style) -> audio [B, T, C] (or SpecGAN's images [B, F, K, C])."""

  def fn(g_params, z, style):
    return spec.models.generator(g_params)(z, style if spec.cfg.model.conditional else None)

  return in_compute_dtype(fn, spec.cfg.compute)(g_params, z, style)


def critic_logits(
  spec: StepSpec, d_params: Any, x: jax.Array, style: jax.Array | None, rng: jax.Array
) -> jax.Array:
  """The main critic's logits [B] for what it reads, x [B, ...]."""

  def fn(d_params, x, style, rng):
    return spec.models.discriminator(d_params)(
      x, style if spec.cfg.model.conditional else None, rng
    )

  return in_compute_dtype(fn, spec.cfg.compute)(d_params, x, style, rng)


def critic_classes(
  spec: StepSpec, d_params: Any, x: jax.Array, style: jax.Array | None, rng: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
  """The main critic's (logits [B], AC-GAN class head [B, cond_dim] or None)."""

  def fn(d_params, x, style, rng):
    return spec.models.discriminator(d_params).logits(
      x, style if spec.cfg.model.conditional else None, rng
    )

  return in_compute_dtype(fn, spec.cfg.compute)(d_params, x, style, rng)


def aux_critics(
  spec: StepSpec, d_params: Any, audio: jax.Array, style: jax.Array | None = None
) -> aux_lib.Outputs:
  """The extra critics' (logits [[B, N_i]], feature maps, style heads) for audio [B, T, C]; they
  hear `style` (vectors [B, cond_dim]) with `model.aux_cond` set and a conditional model."""
  style = style if spec.cfg.model.conditional and spec.cfg.model.aux_cond != "none" else None

  def fn(d_params, audio, style):
    return spec.models.aux(d_params)(audio, style)

  return in_compute_dtype(fn, spec.cfg.compute)(d_params, audio, style)


# ---------------------------------------------------------------------------------------------
# Conditioning and the AC-GAN class loss


def kept_rows(cfg: Config, b: int, rng: jax.Array) -> jax.Array:
  """1 for rows trained with their style, 0 for the `optim.uncond_share` trained without [B]."""
  if not cfg.model.conditional or cfg.optim.uncond_share <= 0:
    return jnp.ones((b,), jnp.float32)
  return (jax.random.uniform(rng, (b,)) >= cfg.optim.uncond_share).astype(jnp.float32)


def styled_per_micro_batch(kept: jax.Array, accum: int) -> jax.Array:
  """`Shared.styled`: max(sum(kept [B]), 1) / accum."""
  count = jnp.maximum(jnp.sum(kept), 1.0)
  return count if accum == 1 else count / accum


def conditioning(m: ModelConfig, styles: jax.Array, kept: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Styles -> (vector given to G and D [B, D], full vector [B, D]); dropped rows get zeros."""
  if not m.conditional:
    return styles, styles
  vec = style_vector(styles, m)  # [B, D]
  return vec * kept[:, None], vec


def class_loss(
  m: ModelConfig, head: jax.Array | None, vec: jax.Array, kept: jax.Array, styled: jax.Array
) -> jax.Array:
  """AC-GAN loss on the rows that have a style: cross-entropy per label field, MSE per attribute.

  Args:
    m: the model config (the label fields' sizes and the number of attributes).
    head: the critic's class head [B, cond_dim], or None (no AC-GAN: the loss is 0).
    vec: the full style vectors [B, cond_dim].
    kept: 1 for rows trained with their style [B].
    styled: the denominator, `Shared.styled`.
  Returns:
    Scalar: sum over kept rows of the per-row loss / styled.
  """
  if head is None:
    return jnp.zeros(())
  per_row, start = jnp.zeros(head.shape[:1]), 0
  for n in m.groups:
    per_row += optax.softmax_cross_entropy(head[:, start : start + n], vec[:, start : start + n])
    start += n
  if m.num_attributes:
    per_row += jnp.sum(jnp.square(head[:, start:] - vec[:, start:]), axis=-1)
  return jnp.sum(per_row * kept) / styled


def aux_class_loss(
  m: ModelConfig, heads: tuple[jax.Array, ...], vec: jax.Array, kept: jax.Array, styled: jax.Array
) -> jax.Array:
  """`class_loss` averaged over the extra critics' AC-GAN heads (0 without any)."""
  if not heads:
    return jnp.zeros(())
  return jnp.mean(jnp.stack([class_loss(m, h, vec, kept, styled) for h in heads]))


def spectrum_groups(
  m: ModelConfig, o: OptimConfig, vec: jax.Array, kept: jax.Array
) -> jax.Array | None:
  """The rows' weights [B, labels] in the per-style mean-spectrum loss (the label fields' entries
  of the style vectors of the rows trained with a style), or None: one group of every row."""
  if not (o.stft_by_style and m.groups):
    return None
  return vec[:, : sum(m.groups)] * kept[:, None]


# ---------------------------------------------------------------------------------------------
# Objectives on one (micro-)batch
#
# Per-example randomness is drawn for the whole batch and sliced into micro-batches; the keys of
# the critic calls are shared by them, and every loss is a mean over rows of per-row terms (the
# class loss divides by the whole batch's count). So accumulating `compute.grad_accum`
# micro-batches gives the full batch's gradient, not another sample of it. The losses of batch
# statistics (feature matching of mean activations, the mean spectrum) are not of that form:
# `ComputeConfig.check_accumulation` refuses them with micro-batches.


def r1_due(update: jax.Array, every: int) -> jax.Array:
  """Whether D update number `update` (counted over the run) computes lazy R1: every `every`-th."""
  return update % every == 0


def augment_draws(
  spec: StepSpec, rng: jax.Array, b: int, t: int, c: int, names: tuple[str, ...]
) -> dict[str, augment.Draws]:
  """Per-row augmentation draws for b clips [b, t, c], one set per name ("aug_real", "aug_fake");
  {} with `augment` off. From `fold_in(rng, AUGMENT_STREAM)`, leaving rng's other draws alone."""
  aug = spec.cfg.augment
  if not aug.enabled:
    return {}
  keys = jax.random.split(jax.random.fold_in(rng, AUGMENT_STREAM), len(names))
  return {name: augment.draw(k, b, t, c, aug.ops) for name, k in zip(names, keys, strict=True)}


def augment_p(spec: StepSpec, aug_p: jax.Array | float | None) -> jax.Array | None:
  """`Shared.aug_p`: the state's probability (`augment.p` when None) as float32 []; None with
  `augment` off."""
  aug = spec.cfg.augment
  if not aug.enabled:
    return None
  return jnp.asarray(aug.p if aug_p is None else aug_p, jnp.float32)


def seen(x: jax.Array, rows: dict, name: str, shared: Shared) -> jax.Array:
  """Audio x [B, T, C] as the critics read it: through the augmentation of `rows[name]` if drawn."""
  return augment.apply(x, rows[name], shared.aug_p) if name in rows else x


def critic_draws(
  spec: StepSpec,
  rng: jax.Array,
  real: jax.Array,
  update: jax.Array | int = 0,
  aug_p: jax.Array | float | None = None,
) -> tuple[dict, Shared]:
  """One D update's randomness for real [B, T, C]: per-row draws {z, kept, eps, and aug_real,
  aug_fake with `augment` on} and `Shared`; `update` is the D update's number in the run (for lazy
  R1), `aug_p` the augmentation probability (the state's; `augment.p` when None)."""
  m = spec.cfg.model
  kz, kr, kf, kg, ke, kc = jax.random.split(rng, 6)
  b = real.shape[0]
  ndim = kind_of(m).critic_ndim  # what the critic reads: audio [B, T, C] or images [B, F, K, C]
  rows = {
    "z": sample_latents(kz, b, m.latent_dim),
    "kept": kept_rows(spec.cfg, b, kc),
    "eps": losses.interpolation_weights(ke, b, ndim),
  }
  # augmentation is for waveform kinds only (`kinds.check`): real is audio [B, T, C]
  rows.update(augment_draws(spec, rng, b, *real.shape[1:3], ("aug_real", "aug_fake")))
  due = r1_due(jnp.asarray(update), spec.cfg.optim.r1_every)
  styled = styled_per_micro_batch(rows["kept"], spec.accum)
  return rows, Shared((kr, kf, kg), styled, due, augment_p(spec, aug_p))


def critic_objective(
  d_params: Any, g_params: Any, batch: Batch, shared: Shared, spec: StepSpec
) -> tuple[jax.Array, Metrics]:
  """D's loss on one (micro-)batch: adversarial + gp_weight * GP + R1 + ac_weight * AC + extra
  critics. R1 is r1_weight / 2 * r1_every * E||grad D(real)||^2 on the updates `shared.r1_due`
  marks, 0 on the others. With `augment` on, every critic reads the augmented real and fake clips,
  and GP and R1 are taken at those inputs.

  Args:
    d_params: the critics' parameters (differentiated).
    g_params: G's parameters (its output is a constant here).
    batch: {"real": audio [B, T, C], "styles": [B, ...], "rows": `critic_draws`' rows}.
    shared: `critic_draws`' keys and class-loss denominator.
    spec: the static pieces.
  Returns:
    (loss, {"d/adv", "d/gp", "d/real", "d/fake", and "d/r1" with R1, "d/ac" with AC-GAN,
    "d/aux" with extra critics, "d/aux_ac" with their AC-GAN heads, "d/sign_real" (mean sign
    of D's real logits) with ADA}).
  """
  m, o = spec.cfg.model, spec.cfg.optim
  d_loss_fn, _ = losses.LOSSES[o.loss]
  gp_weight = o.resolved().gp_weight
  real, styles, rows = batch["real"], batch["styles"], batch["rows"]
  kr, kf, kg = shared.keys
  style, vec = conditioning(m, styles, rows["kept"])
  z = shard_batch(spec, rows["z"])
  fake = jax.lax.stop_gradient(generate(spec, g_params, z, style))  # [B, T, C] or image
  real, fake = seen(real, rows, "aug_real", shared), seen(fake, rows, "aug_fake", shared)
  x_real = kind_of(m).critic_input(real, spec.stats, m)
  d_real, c_real = critic_classes(spec, d_params, x_real, style, kr)  # [B], [B, D]
  d_fake, _ = critic_classes(spec, d_params, fake, style, kf)
  adv = d_loss_fn(d_real, d_fake)
  gp = jnp.zeros(())
  if gp_weight > 0:
    gp = losses.gradient_penalty_at(
      lambda x: critic_logits(spec, d_params, x, style, kg), x_real, fake, rows["eps"]
    )
  ac = class_loss(m, c_real, vec, rows["kept"], shared.styled)  # styles of real clips only
  metrics = {"d/adv": adv, "d/gp": gp, "d/real": jnp.mean(d_real), "d/fake": jnp.mean(d_fake)}
  if c_real is not None:
    metrics["d/ac"] = ac
  if spec.cfg.augment.ada_target > 0:
    metrics["d/sign_real"] = jnp.mean(jnp.sign(d_real))
  total = adv + gp_weight * gp + o.ac_weight * ac
  if o.r1_weight > 0:
    r1 = jax.lax.cond(
      shared.r1_due,
      lambda: losses.r1_penalty(lambda x: critic_logits(spec, d_params, x, style, kg), x_real),
      lambda: jnp.zeros((), jnp.float32),
    )
    metrics["d/r1"] = r1
    total = total + 0.5 * o.r1_weight * o.r1_every * r1
  if spec.models.aux_graph is not None:
    aux_d_loss, _ = losses.AUX_LOSSES[o.aux_loss]
    aux_real = aux_critics(spec, d_params, real, style)
    aux_adv = aux_d_loss(aux_real.logits, aux_critics(spec, d_params, fake, style).logits)
    metrics["d/aux"] = aux_adv
    total = total + aux_adv
    if aux_real.classes:
      aux_ac = aux_class_loss(m, aux_real.classes, vec, rows["kept"], shared.styled)
      metrics["d/aux_ac"] = aux_ac
      total = total + o.ac_weight * aux_ac
  return total, metrics


def generator_draws(
  spec: StepSpec, rng: jax.Array, styles: jax.Array, aug_p: jax.Array | float | None = None
) -> tuple[dict, Shared]:
  """The G update's randomness for styles [B, ...]: per-row draws {z, kept, and aug_fake (aug_real
  too with extra critics, for feature matching) with `augment` on} and `Shared`; `aug_p` as in
  `critic_draws`."""
  m = spec.cfg.model
  kz, kd, kc = jax.random.split(rng, 3)
  b = styles.shape[0]
  rows = {"z": sample_latents(kz, b, m.latent_dim), "kept": kept_rows(spec.cfg, b, kc)}
  names = ("aug_fake", "aug_real") if spec.models.aux_graph is not None else ("aug_fake",)
  rows.update(augment_draws(spec, rng, b, m.slice_len, m.channels, names))
  styled = styled_per_micro_batch(rows["kept"], spec.accum)
  return rows, Shared((kd,), styled, aug_p=augment_p(spec, aug_p))


def generator_objective(
  g_params: Any, d_params: Any, batch: Batch, shared: Shared, spec: StepSpec
) -> tuple[jax.Array, Metrics]:
  """G's loss on one (micro-)batch: adversarial + ac_weight * AC + extra critics + spectrum.

  With `augment` on, the critics read G's clips (and, for feature matching, the real ones)
  augmented, and G learns through the ops; the spectrum loss compares the clips as they are.

  Args:
    g_params: G's parameters (differentiated).
    d_params: the critics' parameters, after this step's D updates.
    batch: {"real": audio [B, T, C], "styles": [B, ...], "rows": `generator_draws`' rows}.
    shared: `generator_draws`' key and class-loss denominator.
    spec: the static pieces.
  Returns:
    (loss, {"g/adv", and "g/ac" with AC-GAN, "g/aux" and "g/fm" with extra critics (and
    "g/aux_ac" with their AC-GAN heads), "g/stft" with `optim.stft_weight`}).
  """
  m, o = spec.cfg.model, spec.cfg.optim
  _, g_loss_fn = losses.LOSSES[o.loss]
  real, styles, rows = batch["real"], batch["styles"], batch["rows"]
  (kd,) = shared.keys
  style, vec = conditioning(m, styles, rows["kept"])
  fake = generate(spec, g_params, shard_batch(spec, rows["z"]), style)
  fake_seen = seen(fake, rows, "aug_fake", shared)
  d_fake, c_fake = critic_classes(spec, d_params, fake_seen, style, kd)
  adv = g_loss_fn(d_fake)
  ac = class_loss(m, c_fake, vec, rows["kept"], shared.styled)
  metrics = {"g/adv": adv}
  if c_fake is not None:
    metrics["g/ac"] = ac
  total = adv + o.ac_weight * ac
  if spec.models.aux_graph is not None:
    _, aux_g_loss = losses.AUX_LOSSES[o.aux_loss]
    aux_fake = aux_critics(spec, d_params, fake_seen, style)
    real_feats = aux_critics(spec, d_params, seen(real, rows, "aug_real", shared), style).feats
    aux_adv = aux_g_loss(aux_fake.logits)
    fm = losses.mean_feature_matching_loss(real_feats, aux_fake.feats)
    metrics.update({"g/aux": aux_adv, "g/fm": fm})
    total = total + o.aux_weight * aux_adv + o.fm_weight * fm
    if aux_fake.classes:
      aux_ac = aux_class_loss(m, aux_fake.classes, vec, rows["kept"], shared.styled)
      metrics["g/aux_ac"] = aux_ac
      total = total + o.aux_weight * o.ac_weight * aux_ac
  if o.stft_weight > 0:
    groups = spectrum_groups(m, o, vec, rows["kept"])
    spectrum = losses.mean_spectrum_loss(real, fake, groups=groups, frames=o.stft_frames)
    metrics["g/stft"] = spectrum
    total = total + o.stft_weight * spectrum
  return total, metrics


Objective = Callable[..., tuple[jax.Array, Metrics]]


def value_and_grad(
  objective: Objective, params: Any, other: Any, batch: Batch, shared: Shared, spec: StepSpec
) -> tuple[tuple[jax.Array, Metrics], Any]:
  """((loss, metrics), grads) of `objective` over the batch, in `compute.grad_accum` micro-batches.

  Args:
    objective: `critic_objective` or `generator_objective`.
    params: what is differentiated; `other`: the other network's parameters.
    batch: arrays [B, ...], split into `grad_accum` micro-batches of B / grad_accum rows.
    shared: passed whole to every micro-batch.
    spec: the static pieces.
  Returns:
    The micro-batches' mean loss, metrics and gradients.
  """
  fn = jax.value_and_grad(functools.partial(objective, spec=spec), has_aux=True)
  accum = spec.accum
  if accum == 1:
    return fn(params, other, jax.tree.map(functools.partial(shard_batch, spec), batch), shared)
  micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

  def body(total, mb):
    out = fn(params, other, jax.tree.map(functools.partial(shard_batch, spec), mb), shared)
    return jax.tree.map(jnp.add, total, out), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(
    lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, params, other, first, shared)
  )
  total, _ = jax.lax.scan(body, zeros, micro)
  return jax.tree.map(lambda x: x / accum, total)


# ---------------------------------------------------------------------------------------------
# The updates and the step


def critic_updates(
  state: GANState, real: jax.Array, styles: jax.Array, rng: jax.Array, spec: StepSpec
) -> tuple[GANState, Metrics]:
  """`n_critic` D updates in a lax.scan, the i-th on real[i] [B, T, C] with styles[i] [B, ...].

  Each update draws its own latents from `split(rng, n_critic)[i]`, as in the authors' code; the
  i-th is the run's D update number step * n_critic + i (for lazy R1). The augmentations apply with
  probability `state.aug_p`.

  Returns:
    (state with the new d_params and d_opt, metrics averaged over the updates).
  """

  def d_update(carry, xs):
    d_params, d_opt = carry
    x, y, key, update = xs
    rows, shared = critic_draws(spec, key, x, update, state.aug_p)
    (loss, metrics), grads = value_and_grad(
      critic_objective,
      d_params,
      state.g_params,
      {"real": x, "styles": y, "rows": rows},
      shared,
      spec,
    )
    updates, d_opt = spec.models.d_tx.update(grads, d_opt, d_params)
    metrics = {**metrics, "d/loss": loss, "d/grad_norm": optax.tree.norm(grads)}
    return (optax.apply_updates(d_params, updates), d_opt), metrics

  n = real.shape[0]
  keys = jax.random.split(rng, n)
  updates = state.step * n + jnp.arange(n, dtype=jnp.int32)  # the D updates' numbers in the run
  (d_params, d_opt), metrics = jax.lax.scan(
    d_update, (state.d_params, state.d_opt), (real, styles, keys, updates)
  )
  metrics = jax.tree.map(jnp.mean, metrics)  # mean over critic steps
  return state.replace(d_params=d_params, d_opt=d_opt), metrics


def generator_update(
  state: GANState, real: jax.Array, styles: jax.Array, rng: jax.Array, spec: StepSpec
) -> tuple[GANState, Metrics]:
  """One G update against `state.d_params`, with real [B, T, C] for the batch-statistics losses.

  Returns:
    (state with the new g_params and g_opt, metrics).
  """
  rows, shared = generator_draws(spec, rng, styles, state.aug_p)
  batch = {"real": real, "styles": styles, "rows": rows}
  (loss, metrics), grads = value_and_grad(
    generator_objective, state.g_params, state.d_params, batch, shared, spec
  )
  updates, g_opt = spec.models.g_tx.update(grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  metrics = {**metrics, "g/loss": loss, "g/grad_norm": optax.tree.norm(grads)}
  return state.replace(g_params=g_params, g_opt=g_opt), metrics


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
  """Warm-up so the EMA tracks G closely early on: min(decay, (1 + t) / (10 + t))."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema_params: Any, params: Any, step: jax.Array, decay: float) -> Any:
  """ema <- d * ema + (1 - d) * params, with d = `ema_decay(step, decay)`."""
  d = ema_decay(step, decay)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


def train_step(
  state: GANState, real: jax.Array, styles: jax.Array, spec: StepSpec
) -> tuple[GANState, Metrics]:
  """`n_critic` D updates, one G update, the EMA; see `make_train_step` for the arguments.

  All randomness comes from `fold_in(key(seed + 1), step)`, so a resumed run repeats an
  uninterrupted one. With `augment` on, the metrics hold "aug/p", the augmentation probability
  after the step: with ADA (`augment.ada_target` > 0) `augment.ada_update` of it by this step's
  "d/sign_real", else `augment.p` throughout.
  """
  rng = jax.random.fold_in(jax.random.key(spec.cfg.train.seed + 1), state.step)
  d_rng, g_rng = jax.random.split(rng)
  state, d_metrics = critic_updates(state, real, styles, d_rng, spec)
  state, g_metrics = generator_update(state, real[-1], styles[-1], g_rng, spec)
  ema = ema_update(state.ema_params, state.g_params, state.step, spec.cfg.optim.ema_decay)
  metrics = {**d_metrics, **g_metrics}
  if spec.cfg.optim.loss == "wgan-gp":
    metrics["d/wdist"] = d_metrics["d/real"] - d_metrics["d/fake"]
  aug = spec.cfg.augment
  if aug.enabled:
    if aug.ada_target > 0:
      p = augment.ada_update(state.aug_p, d_metrics["d/sign_real"], aug.ada_target, aug.ada_steps)
      state = state.replace(aug_p=p)
    metrics["aug/p"] = state.aug_p
  return state.replace(step=state.step + 1, ema_params=ema), metrics


def _stats_dict(moments: Any) -> Mapping[str, Any] | None:
  """The statistics as the run stores them, from that dict or from a (mean, std) pair."""
  if moments is None or isinstance(moments, Mapping):
    return moments
  return dsp.moments_to_dict(*moments)


def make_train_step(
  models: Models,
  cfg: Config,
  mesh: Mesh | None = None,
  moments: Mapping[str, Any] | tuple[Any, Any] | None = None,
) -> Callable[[GANState, jax.Array, jax.Array], tuple[GANState, Metrics]]:
  """Returns `step(state, real [n_critic, B, T, C], styles [n_critic, B, ...]) -> (state, metrics)`.

  `styles` is any form `models.style_vector` accepts: ids [n_critic, B] or [n_critic, B, K], or
  style vectors [n_critic, B, cond_dim]. A model kind with corpus statistics (SpecGAN) needs
  them as `moments`: the run's stored dict, or SpecGAN's (mean, std [bins]) pair.

  Raises:
    ConfigError: statistics missing, or micro-batches with a loss of batch statistics.
  """
  cfg.compute.check_accumulation(cfg.model, cfg.optim)
  spec = StepSpec(models, cfg, kind_of(cfg.model).needs(_stats_dict(moments)), mesh)
  step = functools.partial(train_step, spec=spec)
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
