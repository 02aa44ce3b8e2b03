"""A reference classifier per corpus: log-mel features -> small CNN -> style, in JAX.

It is what the evaluation measures generated audio with (WaveGAN's SC09 inception score, GANSynth's
and DrumGAN's Frechet distances): class probabilities for the inception score and style accuracy,
and its penultimate layer as the embedding for Frechet distance, KID, NDB and nearest neighbours.
It is trained on the real corpus with a held-out split (by source file, so windows of one
recording never sit on both sides), reports its own held-out accuracy, and is cached next to the
corpus under a key made from the corpus' content, the label field and these settings.

The features are computed at the corpus' own rate and for clips of any length (the CNN pools over
time): its frames are `n_fft` and `hop` samples (32 and 16 ms at 16 kHz, 11.6 and 5.8 ms at 44.1
kHz), and the 64 mel bands span 0 Hz to half the rate. A classifier is trained for, and cached
under, one rate (`corpus_key`): what it measures is always audio at the rate it was trained on.

A corpus with one style has nothing to classify: its "classifier" is then the log-mel features'
per-band mean and standard deviation (an embedding without probabilities).

A second, "hardened" classifier (`wavegan.evaluation.scores.hardened_reference`) is trained the
same way with another seed and with `Augmentation` applied to its training batches, so that its
embedding is learned independently of the first and has heard more than the clean corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wavegan import dsp
from wavegan.files import atomic_path, write_json
from wavegan.synthesis.export import digest, flatten, unflatten

CLASSIFIER_VERSION = 1
HELD_OUT = 0.2  # share of source files held out


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """Features and training of the reference classifier."""

  n_fft: int = 512
  hop: int = 256
  n_mels: int = 64
  width: int = 16  # channels of the first conv; doubled at each of 4 blocks
  embed_dim: int = 128
  steps: int = 200
  batch_size: int = 32
  lr: float = 2e-3
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Label-preserving changes to a training batch (`augment`), each applied to each clip with
  probability `p`."""

  p: float = 0.5
  min_gain: float = 0.1  # gain drawn log-uniformly in [min_gain, 1]
  max_shift: float = 0.05  # time shift, zero-filled, up to this share of the clip either way
  min_snr_db: float = 10.0  # added white noise at an SNR (to the clip's RMS) drawn in
  max_snr_db: float = 40.0  # [min_snr_db, max_snr_db]
  max_mask: float = 0.1  # one span of up to this share of the clip set to zero
  # (polarity: the clip is negated, also with probability p)


def augment(audio: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
  """A training batch [B, T, C] with random gain, polarity, time shift, noise and a time mask.

  Each change is drawn per clip and applied with probability `aug.p`; at p = 0 the batch comes
  back unchanged (bit for bit). The random draws are made whatever p is, so the stream of `rng`
  does not depend on it.

  Args:
    audio: float32 [B, T, C].
    rng: the augmentation's own generator.
    aug: settings.
  Returns:
    float32 [B, T, C].
  """
  x = np.array(audio, np.float32, copy=True)  # [B, T, C]
  b, t = x.shape[0], x.shape[1]
  on = rng.random((5, b)) < aug.p  # [5, B]: gain, polarity, shift, noise, mask
  gain = np.exp(rng.uniform(np.log(aug.min_gain), 0.0, b))  # [B]
  max_shift = int(aug.max_shift * t)
  shift = rng.integers(-max_shift, max_shift + 1, b)  # [B]
  snr_db = rng.uniform(aug.min_snr_db, aug.max_snr_db, b)  # [B]
  noise = rng.standard_normal(x.shape).astype(np.float32)  # [B, T, C]
  mask_len = (rng.uniform(0.0, aug.max_mask, b) * t).astype(int)  # [B]
  mask_at = (rng.uniform(0.0, 1.0, b) * (t - mask_len)).astype(int)  # [B]
  scale = np.where(on[0], gain, 1.0) * np.where(on[1], -1.0, 1.0)  # [B]
  x[on[0] | on[1]] *= scale[on[0] | on[1], None, None].astype(np.float32)
  for i in np.flatnonzero(on[2] & (shift != 0)):
    s = int(shift[i])
    x[i] = np.roll(x[i], s, axis=0)
    if s > 0:
      x[i, :s] = 0.0
    else:
      x[i, s:] = 0.0
  rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=(1, 2)))  # [B]
  level = (rms * 10.0 ** (-snr_db / 20.0)).astype(np.float32)  # [B]
  x[on[3]] += noise[on[3]] * level[on[3], None, None]
  for i in np.flatnonzero(on[4]):
    x[i, mask_at[i] : mask_at[i] + mask_len[i]] = 0.0
  return x


def log_mel(audio: jax.Array, mel: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Audio [B, T, C] -> the classifier's features, `dsp.log_mel` of the mono mix [B, F, mels]."""
  return dsp.log_mel(jnp.mean(audio, axis=-1), mel, n_fft, hop)


class StyleNet(nnx.Module):
  """Log-mel [B, F, M] -> (logits [B, K], embedding [B, E]): four conv blocks and global pooling."""

  def __init__(self, cfg: ClassifierConfig, num_classes: int, *, rngs: nnx.Rngs):
    widths = [cfg.width * 2**i for i in range(4)]
    ins = [1] + widths[:-1]
    self.convs = nnx.List([nnx.Conv(i, o, (3, 3), rngs=rngs) for i, o in zip(ins, widths)])
    self.norms = nnx.List([nnx.LayerNorm(o, rngs=rngs) for o in widths])
    self.embed = nnx.Linear(widths[-1], cfg.embed_dim, rngs=rngs)
    self.head = nnx.Linear(cfg.embed_dim, num_classes, rngs=rngs)

  def __call__(self, feats: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = feats[..., None]  # [B, F, M, 1]
    for conv, norm in zip(self.convs, self.norms):
      x = nnx.relu(norm(conv(x)))
      x = nnx.max_pool(x, (2, 2), strides=(2, 2))  # F, M halve
    h = nnx.relu(self.embed(jnp.mean(x, axis=(1, 2))))  # [B, E]
    return self.head(h), h


@dataclasses.dataclass
class Classifier:
  """A trained reference classifier (or, for one style, the feature-statistics embedding).

  Attributes:
    classes: style names its outputs index ([] for the one-style fallback).
    sample_rate: rate its features assume.
    held_out_accuracy: accuracy on the held-out real clips (None for the fallback).
    info: how it was made (key, steps, seconds, clip counts).
  """

  cfg: ClassifierConfig
  classes: tuple[str, ...]
  sample_rate: int
  params: Any
  held_out_accuracy: float | None
  info: dict[str, Any]

  def __post_init__(self):
    mel = jnp.asarray(dsp.mel_filterbank(self.sample_rate, self.cfg.n_fft, self.cfg.n_mels))
    c = self.cfg

    def features(audio):
      return log_mel(audio, mel, c.n_fft, c.hop)

    if self.classes:
      graph = nnx.graphdef(nnx.eval_shape(lambda: StyleNet(c, len(self.classes), rngs=nnx.Rngs(0))))

      def forward(params, audio):
        logits, emb = nnx.merge(graph, params)(features(audio))
        return jax.nn.softmax(logits), emb
    else:

      def forward(params, audio):
        f = features(audio)  # [B, F, M]
        emb = jnp.concatenate([f.mean(axis=1), f.std(axis=1)], axis=-1)  # [B, 2M]
        return jnp.zeros((audio.shape[0], 0)), emb

    self._forward = jax.jit(forward)

  def predict(self, audio: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Audio [N, T, C] -> (probabilities [N, K], embeddings [N, E]), in fixed-size batches."""
    probs, embs = [], []
    for start in range(0, audio.shape[0], batch_size):
      chunk = np.asarray(audio[start : start + batch_size], np.float32)
      n = chunk.shape[0]
      if n < batch_size:  # one compiled shape
        chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], np.float32)])
      p, e = self._forward(self.params, chunk)
      probs.append(np.asarray(p)[:n])
      embs.append(np.asarray(e)[:n])
    if not probs:
      return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(embs)


def held_out_mask(sources: tuple[str, ...], share: float = HELD_OUT) -> np.ndarray:
  """bool [N]: clips whose source file is held out, a fixed function of the file name."""

  def held(path: str) -> bool:
    h = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < share

  by_file = {s: held(s) for s in set(sources)}
  return np.array([by_file[s] for s in sources], bool)


def corpus_key(
  files_fingerprint: str,
  field: str,
  sample_rate: int,
  cfg: ClassifierConfig,
  augmentation: Augmentation | None = None,
) -> str:
  """The cache key: what the corpus holds, the label field, and how the classifier is made
  (a classifier trained without augmentation keeps the key it always had)."""
  parts = [CLASSIFIER_VERSION, files_fingerprint, field, sample_rate, dataclasses.asdict(cfg)]
  if augmentation is not None:
    parts.append({"augmentation": dataclasses.asdict(augmentation)})
  blob = json.dumps(parts, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_classifier(
  audio_fn: Callable[[np.ndarray], np.ndarray],
  labels: np.ndarray,
  train_idx: np.ndarray,
  test_idx: np.ndarray,
  classes: tuple[str, ...],
  sample_rate: int,
  cfg: ClassifierConfig = ClassifierConfig(),
  log: Callable[[str], None] | None = None,
  augmentation: Augmentation | None = None,
) -> Classifier:
  """Trains the reference classifier on the clips `train_idx` and scores it on `test_idx`.

  Args:
    audio_fn: clip indices [b] -> audio float32 [b, T, C] (e.g. `PreparedCache.gather`).
    labels: style id of every clip, int [N].
    train_idx: clips to train on.
    test_idx: held-out clips.
    classes: style names (K >= 2).
    sample_rate: Hz.
    cfg: features and training settings.
    log: progress lines.
    augmentation: `augment` every training batch with these settings (its own random stream,
      seeded by cfg.seed); None trains on the clips as they are.

  Returns:
    The classifier, with its held-out accuracy.
  """
  t0 = time.perf_counter()
  model = StyleNet(cfg, len(classes), rngs=nnx.Rngs(cfg.seed))
  graph, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  mel = jnp.asarray(dsp.mel_filterbank(sample_rate, cfg.n_fft, cfg.n_mels))
  tx = optax.adamw(optax.cosine_decay_schedule(cfg.lr, cfg.steps), weight_decay=1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, audio, y, key):
    # Random gain and circular time shifts: the classifier should hear timbre, not level or onset.
    k1, k2 = jax.random.split(key)
    gain = jax.random.uniform(k1, (audio.shape[0], 1, 1), minval=0.3, maxval=1.0)
    shift = jax.random.randint(k2, (), 0, audio.shape[1] // 8)
    audio = jnp.roll(audio * gain, shift, axis=1)

    def loss_fn(p):
      logits, _ = nnx.merge(graph, p)(log_mel(audio, mel, cfg.n_fft, cfg.hop))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(cfg.seed)
  key = jax.random.key(cfg.seed)
  # Class-balanced batches: small styles are seen as often as large ones.
  by_class = [train_idx[labels[train_idx] == k] for k in range(len(classes))]
  by_class = [c for c in by_class if c.size]
  per = max(1, cfg.batch_size // len(by_class))
  batch_fn, which = audio_fn, "reference"
  if augmentation is not None:
    aug_rng, which = np.random.default_rng([cfg.seed, 1]), "hardened"

    def batch_fn(idx):
      return augment(audio_fn(idx), aug_rng, augmentation)

  loss = jnp.zeros(())
  for s in range(cfg.steps):
    idx = np.concatenate([rng.choice(c, per) for c in by_class])
    params, opt, loss = step(
      params, opt, batch_fn(idx), jnp.asarray(labels[idx], jnp.int32), jax.random.fold_in(key, s)
    )
    if log is not None and (s + 1) % 100 == 0:
      log(f"{which} classifier: step {s + 1}/{cfg.steps}, loss {float(loss):.3f}")
  clf = Classifier(cfg, classes, sample_rate, params, None, {})
  probs, _ = clf.predict(audio_fn(test_idx)) if test_idx.size else (np.zeros((0, 1)), None)
  acc = float(np.mean(np.argmax(probs, axis=1) == labels[test_idx])) if test_idx.size else None
  clf.held_out_accuracy = acc
  clf.info = {
    "train_clips": int(train_idx.size),
    "held_out_clips": int(test_idx.size),
    "steps": cfg.steps,
    "seconds": round(time.perf_counter() - t0, 1),
    "final_loss": float(loss),
  }
  if augmentation is not None:
    clf.info["augmentation"] = dataclasses.asdict(augmentation)
  return clf


def save_classifier(folder: str, clf: Classifier) -> None:
  """Writes params.safetensors, then classifier.json (which holds the params' digest) into
  `folder`, each file whole or not at all: a reader finds the old pair, the new pair, or a pair
  whose digests disagree, which `load_classifier` treats as missing.

  Raises:
    DiskFullError: the disk filled up (nothing half-written is left).
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  tensors = flatten(clf.params) if clf.classes else {}
  if tensors:
    with atomic_path(os.path.join(folder, "params.safetensors")) as tmp:
      save_file(tensors, tmp)
  write_json(
    os.path.join(folder, "classifier.json"),
    {
      "version": CLASSIFIER_VERSION,
      "config": dataclasses.asdict(clf.cfg),
      "classes": list(clf.classes),
      "sample_rate": clf.sample_rate,
      "held_out_accuracy": _finite_or_none(clf.held_out_accuracy),
      "info": {k: _finite_or_none(v) for k, v in clf.info.items()},
      "sha256": digest(tensors),
    },
  )


def _finite_or_none(value: Any) -> Any:
  """NaN or infinity (a diverged training loss, say) as None: JSON has no such numbers."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def load_classifier(folder: str) -> Classifier | None:
  """A cached classifier, or None when it is missing or does not verify."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  try:
    with open(os.path.join(folder, "classifier.json")) as f:
      meta = json.load(f)
    cfg = ClassifierConfig(**meta["config"])
    classes = tuple(meta["classes"])
    tensors = load_file(os.path.join(folder, "params.safetensors")) if classes else {}
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if meta.get("version") != CLASSIFIER_VERSION or digest(tensors) != meta.get("sha256"):
    return None
  params = None
  if classes:
    abstract = nnx.eval_shape(lambda: StyleNet(cfg, len(classes), rngs=nnx.Rngs(0)))
    try:
      params = unflatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)), tensors)
    except KeyError:
      return None
  return Classifier(
    cfg, classes, int(meta["sample_rate"]), params, meta["held_out_accuracy"], meta.get("info", {})
  )
