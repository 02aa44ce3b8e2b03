"""Typed run configuration: one frozen dataclass per concern, nested under `Config`.

The resolved `Config` is written next to every checkpoint (`to_dict`) and read back on resume
(`from_dict`), so a run can always be reproduced and a checkpoint explains itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from wavegan.errors import UserError

SLICE_LENS = (16384, 32768, 65536, 131072, 262144)  # 1 s at 16 kHz ... 5.9 s at 44.1 kHz
MIN_SAMPLE_RATE = 1000  # data.sample_rate's floor, as the CLI's --sample-rate and render's
MAX_LEARNING_RATE = 1.0
MAX_LOSS_WEIGHT = 1e4
MAX_FLOAT = 1e9  # no float setting means anything past this
MAX_INT = 2**31 - 1  # ... nor any integer past this (seeds excepted)
MAX_SEED = 2**32 - 1  # PRNG seeds are 32-bit: 2**32 would silently equal seed 0
INT_LIMITS = {  # sizes whose arrays would exhaust any machine long before
  "model.dim": 4096,
  "model.latent_dim": 65536,
  "model.channels": 64,
  "model.kernel_len": 4096,
  "model.stride": 64,
  "model.style_dim": 65536,
  "model.post_filter_len": 65536,
  "model.aux_width": 4096,
  "model.mbstd_group": 65536,
  "model.attention": 2**20,
  "model.attention_heads": 1024,
  "model.n_fft": 65536,
  "model.hop": 65536,
  "model.gl_iters": 10000,
  "data.sample_rate": 384000,
  "train.batch_size": 65536,
  "train.seed": MAX_SEED,
  "train.preview_per_style": 1024,
  "eval.clips": 100000,
  "eval.classifier_width": 4096,
  "compute.grad_accum": 65536,
}
LOSSES = ("wgan-gp", "hinge", "lsgan", "nonsaturating")
G_UPSAMPLES = ("transposed", "nearest")
AUGMENTS = ("gain", "polarity", "shift", "noise", "mask")  # see wavegan.training.augment
ADA_LOSSES = ("hinge", "nonsaturating")  # losses whose logits' sign says real or fake
RECURRENT = ("none", "gru", "lstm")  # model.recurrent
AUX_CONDS = ("none", "projection", "acgan")  # model.aux_cond
CONV_ALGORITHMS = ("auto", "winograd", "direct")  # compute.conv (see models.layers.conv_algorithm)
GP_WEIGHTS = {"wgan-gp": 10.0}  # each loss' own gradient-penalty weight (the others': 0)


class ConfigError(UserError, ValueError):
  """A configuration value or override that cannot be used."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """WaveGAN generator and discriminator shape (Donahue et al. 2019, Table 1 + the TF code)."""

  slice_len: int = 16384  # samples per clip: one of SLICE_LENS (16384 ... 262144)
  channels: int = 1  # audio channels C of [B, T, C]
  dim: int = 64  # width d: G's first layer has 16d channels (32d for longer slices)
  latent_dim: int = 100  # z ~ U[-1, 1]^latent_dim
  kernel_len: int = 25
  stride: int = 4
  phase_shuffle: int = 2  # radius n of D's phase shuffle; 0 turns it off
  post_filter_len: int = 0  # learned post-processing FIR length in G (paper: 512); 0 = off
  num_styles: int = 0  # set from the corpus; <= 1 means unconditional
  style_dim: int = 32  # width of G's style embedding
  g_cond: str = "concat"  # how G hears the style: "concat" (to z) or "film" (every layer)
  d_cond: str = "projection"  # how D uses it: "projection" or "acgan" (auxiliary classifier)
  # set from the corpus with several label fields: their block sizes, e.g. (4, 3)
  style_groups: tuple[int, ...] = ()
  num_attributes: int = 0  # set from the corpus: continuous attributes in the style vector
  # see models.kinds: "wavegan" (waveforms), "specgan" (log-magnitude spectrograms), "complex"
  # (complex STFT planes) or "ifspec" (log magnitude + instantaneous frequency)
  kind: str = "wavegan"
  n_fft: int = 256  # spectral kinds: STFT frame; n_fft // 2 bins are modelled
  hop: int = 128  # spectral kinds: STFT step; slice_len // hop frames are modelled
  gl_iters: int = 32  # specgan: Griffin-Lim iterations when turning images into audio
  aux_discs: tuple[str, ...] = ()  # wavegan: extra discriminators, any of mrstft, msd, mpd
  aux_width: int = 16  # channels of the extra discriminators' first layers
  # wavegan: how G upsamples: "transposed" (the paper's transposed convolutions) or "nearest"
  # (nearest-neighbour repetition, then a stride-1 convolution: no checkerboard tones)
  g_upsample: str = "transposed"
  mbstd_group: int = 0  # minibatch standard deviation in D over groups of this many clips; 0 = off
  spectral_norm: bool = False  # divide each of D's weight matrices by its largest singular value
  # gated self-attention in G and D where a feature map has this many positions (steps; for
  # specgan frames x bins, e.g. 1024 = 32 x 32); several allowed; () or 0 = off
  attention: tuple[int, ...] = ()
  attention_heads: int = 4  # heads of each attention block
  # a gated bidirectional recurrent layer over G's lowest-resolution feature map and D's last:
  # "none", "gru" or "lstm"
  recurrent: str = "none"
  # how the extra critics (aux_discs) hear the style: "none", "projection" (a projection term on
  # every sub-critic's last feature map) or "acgan" (a style classifier on each, optim.ac_weight)
  aux_cond: str = "none"

  def validate(self) -> None:
    """The checks every model kind shares; a kind's own are `wavegan.models.kinds.check`."""
    if not isinstance(self.kind, str) or not self.kind:
      raise ConfigError(f"model.kind={self.kind!r}: must name a model kind, e.g. 'wavegan'")
    if self.g_upsample not in G_UPSAMPLES:
      raise ConfigError(f"model.g_upsample={self.g_upsample!r}: must be one of {G_UPSAMPLES}")
    if self.mbstd_group < 0:
      raise ConfigError(f"model.mbstd_group={self.mbstd_group}: must be >= 0 (0 = off)")
    if self.gl_iters < 1:
      raise ConfigError(f"model.gl_iters={self.gl_iters}: must be >= 1")
    if any(n < 0 for n in self.attention) or self.attention_heads < 1:
      raise ConfigError(
        f"model.attention={list(self.attention)}, model.attention_heads={self.attention_heads}: "
        "positions must be >= 0 (0 = off) and heads >= 1"
      )
    if self.recurrent not in RECURRENT:
      raise ConfigError(f"model.recurrent={self.recurrent!r}: must be one of {RECURRENT}")
    if self.aux_cond not in AUX_CONDS:
      raise ConfigError(f"model.aux_cond={self.aux_cond!r}: must be one of {AUX_CONDS}")
    unknown = set(self.aux_names) - {"mrstft", "msd", "mpd"}
    if unknown:
      raise ConfigError(f"model.aux_discs: unknown {sorted(unknown)}; valid: mpd, msd, mrstft")
    if self.num_attributes < 0:
      raise ConfigError(f"model.num_attributes={self.num_attributes}: must be >= 0")
    if any(g < 1 for g in self.style_groups):
      raise ConfigError(f"model.style_groups={list(self.style_groups)}: sizes must be >= 1")
    if self.g_cond not in ("concat", "film"):
      raise ConfigError(f"model.g_cond={self.g_cond!r}: must be 'concat' or 'film'")
    if self.d_cond not in ("projection", "acgan"):
      raise ConfigError(f"model.d_cond={self.d_cond!r}: must be 'projection' or 'acgan'")
    if self.slice_len not in SLICE_LENS:
      raise ConfigError(f"model.slice_len={self.slice_len}: must be one of {SLICE_LENS}")
    for name in ("channels", "dim", "latent_dim", "kernel_len", "stride"):
      if getattr(self, name) < 1:
        raise ConfigError(f"model.{name}={getattr(self, name)}: must be >= 1")
    if self.phase_shuffle < 0 or self.post_filter_len < 0:
      raise ConfigError("model.phase_shuffle and model.post_filter_len must be >= 0")

  @property
  def groups(self) -> tuple[int, ...]:
    """Sizes of the label fields' one-hot blocks in the style vector (one field: (num_styles,))."""
    if self.style_groups:
      return self.style_groups
    return (self.num_styles,) if self.num_styles > 1 else ()

  @property
  def cond_dim(self) -> int:
    """Width of the style vector: the label blocks, then the attributes."""
    return sum(self.groups) + self.num_attributes

  @property
  def conditional(self) -> bool:
    return self.cond_dim > 0

  @property
  def aux_names(self) -> tuple[str, ...]:
    return self.aux_discs

  @property
  def attention_at(self) -> tuple[int, ...]:
    """The feature-map lengths that get a self-attention block (`attention` without its 0s)."""
    return tuple(sorted({n for n in self.attention if n}))


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where audio comes from, how it is cut into training clips, and how batches are read.

  A raw folder is prepared (decoded and sliced) into an on-disk cache on first use and brought
  up to date on every start; a prepared cache is used as it is, with its own slicing options.
  """

  path: str = ""  # audio folder (one sub-folder per style) or prepared cache; "" = built-in
  sample_rate: int = 16000
  builtin_per_class: int = 64  # clips per style when the built-in corpus is generated
  normalize: str = "peak"  # per file: "peak" (to 0.95), "loudness" (to loudness_lufs) or "none"
  loudness_lufs: float = -20.0  # target integrated loudness (ITU-R BS.1770) for normalize=loudness
  slice_mode: str = "first"  # "first": each file's onset window; "hop": windows every slice_hop
  slice_hop: int = 0  # samples between windows in "hop" mode; 0 = model.slice_len
  pad_mode: str = "zero"  # windows past a file's end: "zero", "reflect", "loop" or "drop"
  silence_db: float = -120.0  # leave out windows whose RMS is below this (dBFS)
  trim_db: float = 0.0  # trim leading samples quieter than this (dBFS); 0 = off
  manifest: str = ""  # CSV/JSON mapping files to labels; "" = styles from folder names
  # label field(s) naming the style, e.g. (instrument, technique); () = the manifest's only one,
  # or the folder
  label_field: tuple[str, ...] = ()
  # continuous attributes to condition on: manifest columns, or pitch and brightness measured
  # from the audio
  attributes: tuple[str, ...] = ()
  max_seconds: float = 3600.0  # longer files are skipped unread (a 10 h WAV would fill memory)
  store_dtype: str = "int16"  # how prepared windows are stored: "int16" or "float32"
  prepare_workers: int = 0  # decoder processes when preparing; 0 = one per CPU core
  balance: bool = False  # draw every style equally often (else every clip once per epoch)
  loader_workers: int = 0  # grain worker processes reading batches ahead; 0 = threads
  prefetch: int = 2  # steps read ahead

  def validate(self) -> None:
    if self.slice_mode not in ("first", "hop"):
      raise ConfigError(f"data.slice_mode={self.slice_mode!r}: must be 'first' or 'hop'")
    if self.pad_mode not in ("zero", "reflect", "loop", "drop"):
      raise ConfigError(f"data.pad_mode={self.pad_mode!r}: must be zero, reflect, loop or drop")
    if self.normalize not in ("peak", "loudness", "none"):
      raise ConfigError(f"data.normalize={self.normalize!r}: must be peak, loudness or none")
    if self.store_dtype not in ("int16", "float32"):
      raise ConfigError(f"data.store_dtype={self.store_dtype!r}: must be int16 or float32")
    for name in ("slice_hop", "prepare_workers", "loader_workers", "prefetch"):
      if getattr(self, name) < 0:
        raise ConfigError(f"data.{name}={getattr(self, name)}: must be >= 0")
    if self.sample_rate < MIN_SAMPLE_RATE:
      raise ConfigError(f"data.sample_rate={self.sample_rate}: must be >= {MIN_SAMPLE_RATE} (Hz)")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """GAN objective and optimisers; defaults are the paper's WGAN-GP recipe."""

  loss: str = "wgan-gp"
  gp_weight: float | None = None  # gradient-penalty lambda; None: the loss' own (GP_WEIGHTS)
  n_critic: int = 5  # D updates per G update
  g_lr: float = 1e-4
  d_lr: float = 1e-4
  b1: float = 0.5
  b2: float = 0.9
  eps: float = 1e-8  # Adam's epsilon (larger values damp the updates of near-zero gradients)
  ema_decay: float = 0.999  # EMA of G's parameters used for synthesis
  ac_weight: float = 1.0  # weight of the style classification loss (model.d_cond=acgan)
  uncond_share: float = 0.0  # share of examples trained without a style (sampling with style={})
  aux_loss: str = "lsgan"  # adversarial loss of model.aux_discs: "lsgan" or "hinge"
  aux_weight: float = 1.0  # weight of the extra discriminators' adversarial loss for G
  fm_weight: float = 2.0  # feature matching (batch-mean activations of the extra discriminators)
  stft_weight: float = 0.0  # multi-resolution STFT loss of G's average spectrum against the batch's
  # the mean-spectrum loss (when stft_weight > 0) per style: each label-field entry's average
  # spectrum against the real rows' of that entry (a kick's against the kicks'), not the batch's
  stft_by_style: bool = False
  # the mean-spectrum loss (when stft_weight > 0) frame by frame: average spectrograms (one-shots
  # aligned at their onset) instead of long-term spectra
  stft_frames: bool = False
  # R1 (Mescheder et al. 2018): r1_weight / 2 * E||grad D(real)||^2 on real clips; 0 = off
  r1_weight: float = 0.0
  # lazy R1 (StyleGAN2): computed on every r1_every-th D update only, its weight times r1_every
  r1_every: int = 1

  def resolved(self) -> OptimConfig:
    """This config with each default that depends on the loss filled in: `gp_weight` (10 for
    wgan-gp, 0 for the others; an explicit value, any loss's, is kept)."""
    if self.gp_weight is not None:
      return self
    return dataclasses.replace(self, gp_weight=GP_WEIGHTS.get(self.loss, 0.0))

  def validate(self) -> None:
    if not 0.0 <= self.uncond_share < 1.0:
      raise ConfigError(f"optim.uncond_share={self.uncond_share}: must be in [0, 1)")
    for name in ("ac_weight", "aux_weight", "fm_weight", "stft_weight"):
      if getattr(self, name) < 0:
        raise ConfigError(f"optim.{name}={getattr(self, name)}: must be >= 0")
    if self.aux_loss not in ("lsgan", "hinge"):
      raise ConfigError(f"optim.aux_loss={self.aux_loss!r}: must be 'lsgan' or 'hinge'")
    if self.loss not in LOSSES:
      raise ConfigError(f"optim.loss={self.loss!r}: must be one of {LOSSES}")
    if self.n_critic < 1:
      raise ConfigError(f"optim.n_critic={self.n_critic}: must be >= 1")
    if not 0.0 <= self.r1_weight <= MAX_LOSS_WEIGHT:
      raise ConfigError(f"optim.r1_weight={self.r1_weight}: must be in [0, {MAX_LOSS_WEIGHT:g}]")
    if self.r1_every < 1:
      raise ConfigError(f"optim.r1_every={self.r1_every}: must be >= 1")
    if self.eps <= 0:
      raise ConfigError(f"optim.eps={self.eps}: must be > 0")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(f"optim.ema_decay={self.ema_decay}: must be in [0, 1)")
    for name in ("g_lr", "d_lr"):
      if not 0.0 < getattr(self, name) <= MAX_LEARNING_RATE:
        raise ConfigError(
          f"optim.{name}={getattr(self, name)}: must be in (0, {MAX_LEARNING_RATE:g}]"
        )
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(f"optim.{name}={getattr(self, name)}: must be in [0, 1)")
    if self.gp_weight is not None and not 0.0 <= self.gp_weight <= MAX_LOSS_WEIGHT:
      raise ConfigError(f"optim.gp_weight={self.gp_weight}: must be in [0, {MAX_LOSS_WEIGHT:g}]")
    if self.eps > 1.0:
      raise ConfigError(f"optim.eps={self.eps}: must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loop length, batch, seeds and how often to save and preview."""

  steps: int = 100_000  # G updates (each after n_critic D updates)
  batch_size: int = 64  # global batch, split over all devices
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  preview_every: int = 500
  preview_per_style: int = 4
  tensorboard: bool = True  # also log scalars, audio and spectrograms to RUN/tensorboard
  max_minutes: float = 0.0  # stop (preview, evaluate, save) after this much training time; 0 = off
  max_cpu_minutes: float = (
    0.0  # the same in CPU time of the process (equal compute on a shared machine)
  )

  def validate(self) -> None:
    for name in (
      "steps",
      "batch_size",
      "log_every",
      "checkpoint_every",
      "keep_checkpoints",
      "preview_every",
      "preview_per_style",
    ):
      if getattr(self, name) < 1:
        raise ConfigError(f"train.{name}={getattr(self, name)}: must be >= 1")
    if self.seed < 0:
      raise ConfigError(f"train.seed={self.seed}: must be >= 0")
    for name in ("max_minutes", "max_cpu_minutes"):
      if getattr(self, name) < 0:
        raise ConfigError(f"train.{name}={getattr(self, name)}: must be >= 0")


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
  """How the step runs on the hardware; changes neither what is trained nor the checkpoint."""

  dtype: str = (
    "float32"  # "bfloat16": G and D compute in bf16; parameters, optimiser and losses stay f32
  )
  grad_accum: int = 1  # micro-batches per batch: together they give the full batch's gradient
  remat: bool = False  # recompute G's and D's activations in the backward pass (less memory)
  # how the waveform layers' convolutions run: "winograd" (half the multiply-adds in the wide
  # float32 layers; its rounding differs from direct's by ~1e-6 relative), "direct" (XLA's
  # convolution) or "auto" (winograd on CPU, direct on accelerators)
  conv: str = "auto"

  def validate(self) -> None:
    if self.dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"compute.dtype={self.dtype!r}: must be 'float32' or 'bfloat16'")
    if self.conv not in CONV_ALGORITHMS:
      raise ConfigError(f"compute.conv={self.conv!r}: must be one of {', '.join(CONV_ALGORITHMS)}")
    if self.grad_accum < 1:
      raise ConfigError(f"compute.grad_accum={self.grad_accum}: must be >= 1")

  def check_accumulation(self, model: ModelConfig, optim: OptimConfig) -> None:
    """Refuses micro-batches (`grad_accum` > 1) with a loss of batch statistics.

    The micro-batches' gradients average to the full batch's when every loss is a mean over rows
    of per-row terms. Feature matching of the extra critics' mean activations
    (`optim.fm_weight` with `model.aux_discs`) and the mean-spectrum loss (`optim.stft_weight`)
    compare batch means instead: averaged over micro-batches they would be another loss.

    Raises:
      ConfigError: naming the losses and how to do without one or the other.
    """
    if self.grad_accum == 1:
      return
    batch_losses = []
    if model.aux_names and optim.fm_weight > 0:
      batch_losses.append(f"optim.fm_weight={optim.fm_weight:g} (with model.aux_discs)")
    if optim.stft_weight > 0:
      batch_losses.append(f"optim.stft_weight={optim.stft_weight:g}")
    if batch_losses:
      raise ConfigError(
        f"compute.grad_accum={self.grad_accum} cannot give the full batch's gradient of "
        f"{' and '.join(batch_losses)}: those losses compare batch means; use "
        "compute.grad_accum=1 (a smaller train.batch_size) or set the weight to 0"
      )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Measuring a run: light evaluations during training and the reference classifier."""

  every: int = 0  # FD, KID and style accuracy every N steps (and at step 0); 0 = off
  clips: int = 256  # generated clips per light evaluation
  classifier_steps: int = 200  # training steps of the reference classifier (cached per corpus)
  classifier_width: int = 16  # channels of its first conv layer

  def validate(self) -> None:
    if self.every < 0:
      raise ConfigError(f"eval.every={self.every}: must be >= 0")
    for name in ("clips", "classifier_steps", "classifier_width"):
      if getattr(self, name) < 1:
        raise ConfigError(f"eval.{name}={getattr(self, name)}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Augmentation of everything the critic reads, real and generated alike (DiffAugment, ADA).

  Each op is applied to each clip with probability `p`, differentiably (G learns through it) and
  keeping the style: a critic that sees a few hundred clips through it cannot memorise them.
  With `ada_target` > 0 the probability is adapted instead (Karras et al. 2020): raised while
  E[sign(D(real))] is above the target (D is sure of the training clips), lowered below it.
  """

  ops: tuple[str, ...] = AUGMENTS  # which augmentations, any of AUGMENTS
  p: float = 0.0  # probability of each op per clip (ADA's starting value); 0 = off unless ADA
  ada_target: float = 0.0  # ADA's target for E[sign(D(real))], e.g. 0.6; 0 = a fixed p
  ada_steps: int = 500  # steps in which ADA can move p from 0 to 1 at most

  @property
  def enabled(self) -> bool:
    return bool(self.ops) and (self.p > 0 or self.ada_target > 0)

  def validate(self) -> None:
    unknown = sorted(set(self.ops) - set(AUGMENTS))
    if unknown:
      raise ConfigError(f"augment.ops: unknown {unknown}; valid: {', '.join(AUGMENTS)}")
    if not 0.0 <= self.p <= 1.0:
      raise ConfigError(f"augment.p={self.p}: must be in [0, 1]")
    if not 0.0 <= self.ada_target < 1.0:
      raise ConfigError(f"augment.ada_target={self.ada_target}: must be in [0, 1) (0 = off)")
    if self.ada_steps < 1:
      raise ConfigError(f"augment.ada_steps={self.ada_steps}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  optim: OptimConfig = OptimConfig()
  train: TrainConfig = TrainConfig()
  eval: EvalConfig = EvalConfig()
  compute: ComputeConfig = ComputeConfig()
  augment: AugmentConfig = AugmentConfig()

  def validate(self) -> Config:
    """`self` after the checks of every section and across them, with the defaults that depend
    on other settings filled in (`OptimConfig.resolved`): the config a run records. A resolved
    config validates to itself.

    The checks of the model kind (`model.kind`) are `wavegan.models.kinds.check`, which code
    that builds models runs after this.
    """
    sections = (
      self.model,
      self.data,
      self.optim,
      self.train,
      self.eval,
      self.compute,
      self.augment,
    )
    for section in sections:
      check_magnitudes(section)
    self.model.validate()
    self.data.validate()
    self.optim.validate()
    self.train.validate()
    self.eval.validate()
    self.compute.validate()
    self.augment.validate()
    if self.augment.ada_target > 0 and self.optim.loss not in ADA_LOSSES:
      raise ConfigError(
        f"augment.ada_target needs logits whose sign says real or fake: optim.loss one of "
        f"{ADA_LOSSES}, not {self.optim.loss!r}"
      )
    micro = self.train.batch_size // max(self.compute.grad_accum, 1)
    if self.model.mbstd_group and micro % self.model.mbstd_group:
      raise ConfigError(
        f"model.mbstd_group={self.model.mbstd_group} must divide the (micro-)batch of {micro}"
      )
    if self.train.batch_size % self.compute.grad_accum:
      raise ConfigError(
        f"train.batch_size={self.train.batch_size} does not split into "
        f"compute.grad_accum={self.compute.grad_accum} micro-batches"
      )
    self.compute.check_accumulation(self.model, self.optim)
    optim = self.optim.resolved()
    return self if optim is self.optim else dataclasses.replace(self, optim=optim)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Config:
    """Inverse of `to_dict`; unknown keys are an error so stale configs are noticed."""
    parts = {}
    for f in dataclasses.fields(cls):
      sub_cls = _field_types(cls)[f.name]
      sub = dict(d.get(f.name, {}))
      known = {sf.name for sf in dataclasses.fields(sub_cls)}
      unknown = set(sub) - known
      if unknown:
        raise ConfigError(f"unknown {f.name} keys {sorted(unknown)}; valid: {sorted(known)}")
      if f.name == "data" and isinstance(sub.get("normalize"), bool):  # runs from before "loudness"
        sub["normalize"] = "peak" if sub["normalize"] else "none"
      parts[f.name] = section_from_dict(sub_cls, sub)
    return cls(**parts)


_SECTION_NAMES = {
  f.type if isinstance(f.type, type) else type(f.default): f.name
  for f in dataclasses.fields(Config)
}


def check_magnitudes(section: Any) -> None:
  """Refuses values that make garbage or exhaust the machine before anything else looks at them:
  NaN and infinite numbers, magnitudes past any sane use, and NUL characters in strings.

  Raises:
    ConfigError: naming the key and its sane range.
  """
  prefix = _SECTION_NAMES[type(section)]
  for f in dataclasses.fields(section):
    value, key = getattr(section, f.name), f"{prefix}.{f.name}"
    if isinstance(value, bool):
      continue
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{key}={value}: must be a finite number")
    if isinstance(value, (int, float)):
      limit = INT_LIMITS.get(key, MAX_INT) if isinstance(value, int) else MAX_FLOAT
      if abs(value) > limit:
        raise ConfigError(f"{key}={value}: out of range (at most {limit} in magnitude)")
    if isinstance(value, str) and "\x00" in value:
      raise ConfigError(f"{key}: must not contain a NUL character")
    if isinstance(value, tuple):
      for item in value:
        if isinstance(item, int) and abs(item) > INT_LIMITS.get(key, MAX_INT):
          raise ConfigError(f"{key}: {item} is out of range")
        if isinstance(item, str) and ("\x00" in item or not item):
          raise ConfigError(f"{key}: items must be non-empty and free of NUL characters")


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
  """Applies `section.key=value` strings, parsing each value as the field's type.

  A few lines of our own rather than a config library: the frozen dataclasses above stay the one
  source of truth, and errors name the exact key and the valid choices.
  """
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    section, _, name = key.strip().partition(".")
    sections = {f.name for f in dataclasses.fields(cfg)}
    if section not in sections:
      raise ConfigError(f"--set {key}: unknown section {section!r}; valid: {sorted(sections)}")
    sub = getattr(cfg, section)
    types = _field_types(type(sub))
    if name not in types:
      raise ConfigError(f"--set {key}: unknown key {name!r}; valid: {sorted(types)}")
    value = _parse(raw.strip(), types[name], key)
    cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{name: value})})
  return cfg


def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def section_from_dict(cls: type, values: dict[str, Any]) -> Any:
  """One config section from its dict (a `to_dict` part, or an exported model's metadata).

  List fields come back as tuples; runs and model files from before list fields stored them as
  comma-separated strings ("4,3", "mrstft,msd"), which are read the same way.
  """
  types = _field_types(cls)
  values = dict(values)
  for name, value in values.items():
    if typing.get_origin(types.get(name)) is tuple:
      if isinstance(value, str):
        value = _parse(value, types[name], f"{_SECTION_NAMES.get(cls, cls.__name__)}.{name}")
      values[name] = tuple(value)
  return cls(**values)


def _parse(raw: str, typ: Any, key: str) -> Any:
  if typing.get_origin(typ) is tuple:  # a list: comma-separated items ("mrstft,msd", "4,3")
    item = typing.get_args(typ)[0]
    return tuple(_parse(part.strip(), item, key) for part in raw.split(",") if part.strip())
  options = typing.get_args(typ)
  if type(None) in options:  # an optional setting: "none" leaves it to its default
    if raw.lower() == "none":
      return None
    typ = next(t for t in options if t is not type(None))
  try:
    if typ is bool:
      lowered = raw.lower()
      if lowered in ("1", "true", "yes", "on"):
        return True
      if lowered in ("0", "false", "no", "off"):
        return False
      raise ValueError(raw)
    if typ is int:
      return int(raw)
    if typ is float:
      return float(raw)  # NaN and infinity are refused by `check_magnitudes`
    return raw
  except ValueError:
    raise ConfigError(f"--set {key}={raw}: not a valid {getattr(typ, '__name__', typ)}") from None
