"""Is a run getting better? Generated clips scored against the real corpus, with references.

Every figure is computed for three sets against the real training split, so it can be read:
generated clips, the held-out real clips (what a perfect generator would score), and white noise
(what a useless one would). Distances between sets (Frechet distance, KID, NDB) use the same
number of clips for every set (the held-out split's size), because they are biased by sample size.

Beside it stands a hardened judge (`hardened_reference`, `score_hardened`): a second classifier,
trained with another seed on augmented batches, temperature-scaled on the held-out clips, whose
"accepted style accuracy" counts a clip only when it is classified as the asked-for style AND its
embedding lies within the distance of real clips to the nearest real clip of that style (an
in-domain classifier confidently labels artefacts it never saw; a reject test catches them).
The agreement of the two classifiers' predictions is high on real audio and falls on artefacts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from wavegan.evaluation import metrics
from wavegan.evaluation.classifier import (
  Augmentation,
  Classifier,
  ClassifierConfig,
  corpus_key,
  held_out_mask,
  load_classifier,
  save_classifier,
  train_classifier,
)

CLASSIFIER_DIR = "classifiers"
HARDENED_DIR = "classifiers_hardened"  # the second, augmented classifier: a folder of its own
ACCEPT_QUANTILE = 0.95  # the reject test's limit: this quantile of real clips' distances
# Temperature scaling's search range. Held-out clips that are all classified right make the NLL
# fall all the way to the lower bound; the report flags that (the fit then says nothing).
TEMPERATURE_BOUNDS = (0.05, 50.0)
NOISE_PEAK = 0.95


@dataclasses.dataclass
class Reference:
  """The real side of every comparison: classifier, splits and their outputs."""

  classifier: Classifier
  styles: tuple[str, ...]
  train_idx: np.ndarray  # clip indices of the training split [Nt]
  test_idx: np.ndarray  # held-out clip indices [Nh]
  train_emb: np.ndarray  # [Nt, E]
  test_emb: np.ndarray  # [Nh, E]
  test_probs: np.ndarray  # [Nh, K]
  test_labels: np.ndarray  # [Nh]

  @property
  def conditional(self) -> bool:
    return bool(self.classifier.classes)


def classifier_config(cfg) -> ClassifierConfig:
  """The reference classifier settings of a run config."""
  return ClassifierConfig(steps=cfg.eval.classifier_steps, width=cfg.eval.classifier_width)


def _fingerprint(cache) -> str:
  """What a prepared cache holds: its options and every used file's identity and windows."""
  rows = [[e.path, e.size, e.mtime_ns, list(e.offsets), e.labels] for e in cache.files]
  blob = json.dumps([cache.dtype, dataclasses.asdict(cache.options), rows], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def reference(
  data,
  label_field: tuple[str, ...] = (),
  cfg: ClassifierConfig = ClassifierConfig(),
  log: Callable[[str], None] = print,
) -> Reference:
  """The corpus' reference classifier (trained once, then cached in the corpus cache) and splits.

  Args:
    data: the run's `wavegan.inputs.TrainData`.
    label_field: the label field the styles come from (for the cache key).
    cfg: classifier settings.
    log: progress lines.
  """
  cache = data.cache
  usable = data.usable
  sources = tuple(cache.sources[i] for i in usable)
  held = held_out_mask(sources)
  if not held.any() or held.all():  # tiny corpora: hold out every 5th clip instead
    held = np.arange(usable.size) % 5 == 4
  train_idx, test_idx = usable[~held], usable[held]
  styles = data.styles
  if len(styles) <= 1:
    clf = Classifier(cfg, (), cache.sample_rate, None, None, {"kind": "log-mel statistics"})
  else:
    clf = _cached_classifier(data, label_field, train_idx, test_idx, cfg, None, log)
  _, train_emb = clf.predict(cache.gather(train_idx))
  test_probs, test_emb = clf.predict(cache.gather(test_idx))
  return Reference(
    clf, styles, train_idx, test_idx, train_emb, test_emb, test_probs, data.labels[test_idx]
  )


def _cached_classifier(
  data,
  label_field: tuple[str, ...],
  train_idx: np.ndarray,
  test_idx: np.ndarray,
  cfg: ClassifierConfig,
  augmentation: Augmentation | None,
  log: Callable[[str], None],
) -> Classifier:
  """The classifier for these settings from the corpus cache, trained and cached when missing."""
  cache = data.cache
  styles = data.styles
  # The key joins the fields as the config once spelled them ("a,b"), so cached classifiers stay valid.
  key = corpus_key(_fingerprint(cache), ",".join(label_field), cache.sample_rate, cfg, augmentation)
  which = "reference" if augmentation is None else "hardened"
  folder = os.path.join(cache.path, CLASSIFIER_DIR if augmentation is None else HARDENED_DIR, key)
  clf = load_classifier(folder)
  if clf is None or clf.classes != styles:
    log(f"training the {which} classifier on {train_idx.size} clips ({test_idx.size} held out)")
    clf = train_classifier(
      cache.gather,
      data.labels,
      train_idx,
      test_idx,
      styles,
      cache.sample_rate,
      cfg,
      log=log,
      augmentation=augmentation,
    )
    save_classifier(folder, clf)
    log(
      f"{which} classifier: held-out accuracy {clf.held_out_accuracy:.3f} "
      f"({clf.info['seconds']:.0f} s), cached in {folder}"
    )
  return clf


@dataclasses.dataclass
class Hardened:
  """The second judge: an independently trained, augmented classifier, calibrated, with the
  per-style distance limits of the "unlike any real clip" reject test.

  Attributes:
    temperature: the temperature-scaling T fitted on the held-out real clips.
    quantile: the limits' quantile of real held-out clips' nearest-real distances.
    train_labels: styles of the training split [Nt].
    test_nn: each held-out clip's distance to the nearest training clip of its style [Nh].
    limits: per style, the `quantile` of `test_nn` [K].
    test_limits: each held-out clip's limit with itself left out [Nh].
  """

  classifier: Classifier
  temperature: float
  quantile: float
  train_emb: np.ndarray  # [Nt, E]
  train_labels: np.ndarray  # [Nt]
  test_emb: np.ndarray  # [Nh, E]
  test_probs: np.ndarray  # [Nh, K]
  test_nn: np.ndarray  # [Nh]
  limits: np.ndarray  # [K]
  test_limits: np.ndarray  # [Nh]


def hardened_config(cfg: ClassifierConfig) -> ClassifierConfig:
  """The hardened classifier's settings: the reference's, with another seed."""
  return dataclasses.replace(cfg, seed=cfg.seed + 1)


def log_probs(probs: np.ndarray) -> np.ndarray:
  """Probabilities [N, K] as logits (log, floored where float32 underflowed to 0) [N, K]."""
  return np.log(np.maximum(np.asarray(probs, np.float64), 1e-38))


def hardened_reference(
  data,
  ref: Reference,
  label_field: tuple[str, ...] = (),
  cfg: ClassifierConfig = ClassifierConfig(),
  augmentation: Augmentation = Augmentation(),
  quantile: float = ACCEPT_QUANTILE,
  log: Callable[[str], None] = print,
) -> Hardened | None:
  """The hardened judge on the reference's splits (None for a corpus with one style).

  Args:
    data: the run's `wavegan.inputs.TrainData`.
    ref: today's reference (its splits are reused).
    label_field: for the cache key.
    cfg: the reference classifier's settings; `hardened_config` of them are used.
    augmentation: applied to the training batches.
    quantile: of the held-out clips' nearest-real distances, per style.
    log: progress lines.
  """
  if not ref.conditional:
    return None
  cache = data.cache
  hcfg = hardened_config(cfg)
  clf = _cached_classifier(data, label_field, ref.train_idx, ref.test_idx, hcfg, augmentation, log)
  _, train_emb = clf.predict(cache.gather(ref.train_idx))
  test_probs, test_emb = clf.predict(cache.gather(ref.test_idx))
  train_labels = data.labels[ref.train_idx]
  temperature = metrics.fit_temperature(log_probs(test_probs), ref.test_labels, TEMPERATURE_BOUNDS)
  test_nn = metrics.nearest_by_style(test_emb, ref.test_labels, train_emb, train_labels)
  return Hardened(
    clf,
    temperature,
    quantile,
    train_emb,
    train_labels,
    test_emb,
    test_probs,
    test_nn,
    metrics.style_limits(test_nn, ref.test_labels, len(ref.styles), quantile),
    metrics.leave_one_out_limits(test_nn, ref.test_labels, quantile),
  )


def _per_style(hit: np.ndarray, style_ids: np.ndarray, styles: tuple[str, ...]) -> dict:
  return {
    name: float(np.mean(hit[style_ids == i])) if np.any(style_ids == i) else None
    for i, name in enumerate(styles)
  }


def score_hardened(
  ref: Reference,
  hard: Hardened,
  audio: np.ndarray,
  style_ids: np.ndarray | None,
  *,
  base_probs: np.ndarray | None = None,
  probs: np.ndarray | None = None,
  emb: np.ndarray | None = None,
  limits: np.ndarray | None = None,
  seed: int = 0,
) -> dict[str, Any]:
  """The hardened judge's figures for one set of clips.

  Args:
    ref: today's reference (its classifier's predictions give the agreement).
    hard: the hardened judge.
    audio: clips [N, T, C].
    style_ids: the asked-for style of each clip [N] (None: no accuracy figures).
    base_probs: today's classifier's probabilities on `audio` [N, K], when computed.
    probs, emb: the hardened classifier's outputs on `audio`, when computed.
    limits: each clip's distance limit [N] (default: its asked-for style's `hard.limits`; the
      held-out real clips pass `hard.test_limits`, which leave each clip out).
    seed: for the matched-size subset of the Frechet distance.

  Returns:
    {"clips", "fd", "agreement" (share of clips both classifiers give the same style),
    "confidence" and "calibrated_confidence" (mean top probability before and after temperature
    scaling), and with style ids "style_accuracy", "accepted_style_accuracy", "near_real_rate"
    (share within the distance limit) and their per-style dicts}.
  """
  if probs is None or emb is None:
    probs, emb = hard.classifier.predict(audio)
  if base_probs is None:
    base_probs, _ = ref.classifier.predict(audio)
  pred = np.argmax(probs, axis=1)  # [N]
  calibrated = metrics.calibrated_probs(log_probs(probs), hard.temperature)  # [N, K]
  m = max(2, hard.test_emb.shape[0])
  out: dict[str, Any] = {
    "clips": int(audio.shape[0]),
    "fd": metrics.frechet_distance(_matched(emb, m, seed), hard.train_emb),
    "agreement": float(np.mean(pred == np.argmax(base_probs, axis=1))),
    "confidence": float(np.mean(np.max(probs, axis=1))),
    "calibrated_confidence": float(np.mean(np.max(calibrated, axis=1))),
  }
  if style_ids is not None:
    style_ids = np.asarray(style_ids)
    dist = metrics.nearest_by_style(emb, style_ids, hard.train_emb, hard.train_labels)  # [N]
    if limits is None:
      limits = hard.limits[style_ids]
    near = metrics.accept_mask(style_ids, style_ids, dist, limits)  # the distance test alone
    hit = pred == style_ids
    ok = metrics.accept_mask(pred, style_ids, dist, limits)
    out["style_accuracy"] = float(np.mean(hit))
    out["accepted_style_accuracy"] = float(np.mean(ok))
    out["near_real_rate"] = float(np.mean(near))
    out["style_accuracy_per_style"] = _per_style(hit, style_ids, ref.styles)
    out["accepted_style_accuracy_per_style"] = _per_style(ok, style_ids, ref.styles)
  return out


def score_hardened_real(ref: Reference, hard: Hardened, audio: np.ndarray) -> dict[str, Any]:
  """`score_hardened` for the held-out real clips `audio` (= the gathered `ref.test_idx`), from
  the outputs already computed and with leave-one-out limits."""
  return score_hardened(
    ref,
    hard,
    audio,
    ref.test_labels,
    base_probs=ref.test_probs,
    probs=hard.test_probs,
    emb=hard.test_emb,
    limits=hard.test_limits,
  )


def hardened_summary(hard: Hardened, ref: Reference) -> dict[str, Any]:
  """What the hardened classifier is, for a report."""
  logits = log_probs(hard.test_probs)
  return {
    "kind": "cnn on log-mel, augmented training",
    "seed": hard.classifier.cfg.seed,
    "held_out_accuracy": hard.classifier.held_out_accuracy,
    "temperature": hard.temperature,
    "temperature_at_bound": bool(
      not TEMPERATURE_BOUNDS[0] * 1.01 < hard.temperature < TEMPERATURE_BOUNDS[1] / 1.01
    ),
    "held_out_nll": metrics.temperature_nll(logits, ref.test_labels, 1.0),
    "held_out_nll_calibrated": metrics.temperature_nll(logits, ref.test_labels, hard.temperature),
    "accept_quantile": hard.quantile,
    "distance_limits": {name: float(v) for name, v in zip(ref.styles, hard.limits)},
    **hard.classifier.info,
  }


def noise_clips(n: int, like: tuple[int, int], seed: int = 0) -> np.ndarray:
  """White-noise clips [n, T, C] at peak 0.95: the baseline every metric should beat."""
  x = np.random.default_rng(seed).standard_normal((n,) + like).astype(np.float32)
  return x * (NOISE_PEAK / np.max(np.abs(x), axis=(1, 2), keepdims=True))


def _matched(x: np.ndarray, m: int, seed: int) -> np.ndarray:
  """m rows of x, chosen deterministically (all of them when x has no more)."""
  if x.shape[0] <= m:
    return x
  return x[np.sort(np.random.default_rng(seed).choice(x.shape[0], m, replace=False))]


def score_set(
  ref: Reference,
  audio: np.ndarray,
  style_ids: np.ndarray | None,
  *,
  probs: np.ndarray | None = None,
  emb: np.ndarray | None = None,
  seed: int = 0,
) -> dict[str, Any]:
  """Every metric for one set of clips against the real training split.

  Args:
    ref: the reference.
    audio: the clips [N, T, C] (for silence and clipping rates).
    style_ids: the style each clip should have [N] (None: unconditional).
    probs, emb: the classifier's outputs on `audio` when already computed.
    seed: for the matched-size subsets.

  Returns:
    A flat dict of figures (see `METRICS`).
  """
  if probs is None or emb is None:
    probs, emb = ref.classifier.predict(audio)
  m = max(2, ref.test_emb.shape[0])
  sub = _matched(emb, m, seed)
  train = ref.train_emb
  k = max(2, min(50, m // 8))
  out: dict[str, Any] = {
    "clips": int(audio.shape[0]),
    "fd": metrics.frechet_distance(sub, train),
    "kid": metrics.kernel_distance(sub, train, subsets=10, subset_size=min(100, m), seed=seed)[0],
    "ndb_over_k": metrics.ndb(train, sub, k=k, seed=seed)["ndb_over_k"],
    "nn_distance": float(np.mean(metrics.nearest_neighbour_distance(emb, train))),
    "silent_rate": metrics.silence_rate(audio),
    "clipped_rate": metrics.clipping_rate(audio),
  }
  if ref.conditional:
    out["inception_score"] = metrics.inception_score(probs)[0]
    if style_ids is not None:
      hit = np.argmax(probs, axis=1) == style_ids
      out["style_accuracy"] = float(np.mean(hit))
      out["style_accuracy_per_style"] = {
        name: float(np.mean(hit[style_ids == i])) if np.any(style_ids == i) else None
        for i, name in enumerate(ref.styles)
      }
  return out


# name -> (label, which way is better) for reports
HARDENED_METRICS = {
  "style_accuracy": ("Style accuracy", "higher"),
  "accepted_style_accuracy": (
    "Accepted style accuracy (right style and near a real clip)",
    "higher",
  ),
  "near_real_rate": ("Within the distance limit of a real clip of the style", "higher"),
  "agreement": ("Agreement with the reference classifier", "near real"),
  "fd": ("Frechet distance", "lower"),
  "confidence": ("Confidence (mean top probability)", "-"),
  "calibrated_confidence": ("Calibrated confidence", "-"),
}

METRICS = {
  "inception_score": ("Inception score", "higher"),
  "style_accuracy": ("Style accuracy", "higher"),
  "fd": ("Frechet distance", "lower"),
  "kid": ("KID", "lower"),
  "ndb_over_k": ("NDB/K", "lower"),
  "nn_distance": ("Mean nearest-neighbour distance to training clips", "near real"),
  "silent_rate": ("Silent clips", "lower"),
  "clipped_rate": ("Clipped clips", "lower"),
}


def json_safe(value: Any) -> Any:
  """`value` with every NaN or infinite number (a figure that could not be computed, e.g. a rank
  correlation of constant values or the distance of a degenerate set) replaced by None, so it can
  be written as strict JSON (null); numpy scalars become Python numbers."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def light_eval(ref: Reference, audio: np.ndarray, style_ids: np.ndarray | None) -> dict[str, float]:
  """The few figures logged during training: Frechet distance, KID and style accuracy."""
  probs, emb = ref.classifier.predict(audio)
  m = max(2, ref.test_emb.shape[0])
  sub = _matched(emb, m, 0)
  out = {
    "eval/fd": metrics.frechet_distance(sub, ref.train_emb),
    "eval/kid": metrics.kernel_distance(sub, ref.train_emb, subsets=5, subset_size=min(100, m))[0],
    "eval/silent_rate": metrics.silence_rate(audio),
  }
  if ref.conditional and style_ids is not None:
    out["eval/style_acc"] = float(np.mean(np.argmax(probs, axis=1) == style_ids))
  return out


def attribute_response(
  synth, name: str, asked: np.ndarray, *, per_style: int = 16, seed: int = 0
) -> dict[str, Any]:
  """Does asking for a higher attribute value give a higher measured one?

  For every style of the first label field (or none) and every asked value, the same `per_style`
  latents are rendered with only the attribute changed, and the attribute is measured on the
  audio with the function that labelled the corpus (`data_pipelines.features`).

  Args:
    synth: a `Synthesizer` conditioned on `name`.
    name: an attribute measurable from audio ("pitch", "brightness").
    asked: values to ask for, in the attribute's unit, ascending [V].
    per_style: latents per style.
    seed: latent seed.

  Returns:
    {"asked": [V], "styles": [S], "median": [S][V] medians of the measured values (None where
    nothing was measurable), "measured_share": share of clips with a measurement,
    "spearman": rank correlation of asked and measured over all measured clips}.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  from data_pipelines import features  # pylint: disable=g-import-not-at-top

  c = synth.conditioning
  field, vocab = c.fields[0] if c.fields else ("", ())
  z = synth.latents(per_style, seed=seed)
  styles = list(vocab) or [""]
  med, xs, ys, total = [], [], [], 0
  for s in styles:
    row = []
    for v in asked:
      style = {name: float(v), **({field: s} if s else {})}
      audio = synth.from_latents(z, style)
      got = features.compute(name, audio, synth.sample_rate)  # [per_style]
      ok = np.isfinite(got)
      total += got.size
      xs += [float(v)] * int(ok.sum())
      ys += got[ok].tolist()
      row.append(float(np.median(got[ok])) if ok.any() else None)
    med.append(row)
  rho = float(stats.spearmanr(xs, ys).statistic) if len(set(xs)) > 1 and len(ys) > 2 else None
  return {
    "asked": [float(v) for v in asked],
    "styles": styles,
    "median": med,
    "measured_share": len(ys) / max(total, 1),
    "spearman": rho,
  }
