"""Is a run getting better? Generated clips scored against the real corpus, with references.

Every figure is computed for three sets against the real training split, so it can be read:
generated clips, the held-out real clips (what a perfect generator would score), and white noise
(what a useless one would). Distances between sets (Frechet distance, KID, NDB) use the same
number of clips for every set (the held-out split's size), because they are biased by sample size.
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
  Classifier,
  ClassifierConfig,
  corpus_key,
  held_out_mask,
  load_classifier,
  save_classifier,
  train_classifier,
)

CLASSIFIER_DIR = "classifiers"
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
  # The key joins the fields as the config once spelled them ("a,b"), so cached classifiers stay valid.
  key = corpus_key(_fingerprint(cache), ",".join(label_field), cache.sample_rate, cfg)
  folder = os.path.join(cache.path, CLASSIFIER_DIR, key)
  clf = load_classifier(folder) if len(styles) > 1 else None
  if len(styles) <= 1:
    clf = Classifier(cfg, (), cache.sample_rate, None, None, {"kind": "log-mel statistics"})
  elif clf is None or clf.classes != styles:
    log(f"training the reference classifier on {train_idx.size} clips ({test_idx.size} held out)")
    clf = train_classifier(
      cache.gather, data.labels, train_idx, test_idx, styles, cache.sample_rate, cfg, log=log
    )
    save_classifier(folder, clf)
    log(
      f"reference classifier: held-out accuracy {clf.held_out_accuracy:.3f} "
      f"({clf.info['seconds']:.0f} s), cached in {folder}"
    )
  _, train_emb = clf.predict(cache.gather(train_idx))
  test_probs, test_emb = clf.predict(cache.gather(test_idx))
  return Reference(
    clf, styles, train_idx, test_idx, train_emb, test_emb, test_probs, data.labels[test_idx]
  )


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
