"""A run's training data: its folder (or the built-in corpus) prepared into a cache, labelled.

`--data` may name a folder of audio or a prepared cache. A folder is prepared into
`$WAVEGAN_CACHE/prepared/<name>-<hash>`, keyed by the folder and the slicing options, and brought
up to date (new and changed files only) each time a run starts; a cache is used as it is, and the
run adopts the slicing options it was made with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable

import numpy as np

from data_pipelines import (
  BatchSource,
  DataError,
  PreparedCache,
  SliceOptions,
  builtin_corpus,
  default_cache_root,
  features,
  is_cache,
  open_cache,
  prepare,
)
from data_pipelines.corpus import MIN_SAMPLE_RATE as MIN_CORPUS_RATE
from data_pipelines.reports import summarize
from wavegan import files
from wavegan.conditioning import Attribute, Conditioning
from wavegan.config import Config, ConfigError

PREPARED_DIR = "prepared"


@dataclasses.dataclass(frozen=True)
class TrainData:
  """The clips a run trains on.

  Attributes:
    cache: the prepared clips.
    labels: style id of every clip in the cache (first label field), int32 [N]; -1 for clips
      left out (no label).
    styles: style names, sorted; `styles[id]`.
    summary: one line on what was used and skipped.
    conditioning: the label fields and attributes, when there is more than one field or any
      attribute (else empty: batches carry style ids).
    field_ids: every clip's id in each label field, int32 [N, K], with `conditioning`.
    attribute_values: every clip's raw attribute values, float32 [N, A] (NaN: unknown).
  """

  cache: PreparedCache
  labels: np.ndarray
  styles: tuple[str, ...]
  summary: str
  conditioning: Conditioning = Conditioning()
  field_ids: np.ndarray | None = None
  attribute_values: np.ndarray | None = None

  @property
  def conditions(self) -> np.ndarray | None:
    """Style vectors of every clip, float32 [N, cond_dim] (None for style ids alone)."""
    if self.conditioning.simple:
      return None
    attrs = (
      np.stack(
        [
          a.standardize(self.attribute_values[:, i])
          for i, a in enumerate(self.conditioning.attributes)
        ],
        axis=1,
      )
      if self.conditioning.attributes
      else np.zeros((len(self.labels), 0), np.float32)
    )
    return self.conditioning.vectors(self.field_ids, attrs)

  @property
  def usable(self) -> np.ndarray:
    """Indices of the clips that have a style, int64 [M]."""
    return np.flatnonzero(self.labels >= 0)

  def batch_source(self, cfg: Config, *, num_shards: int = 1, shard_index: int = 0) -> BatchSource:
    """The run's deterministic batches (n_critic per step) over the usable clips."""
    return BatchSource(
      self.cache,
      self.labels.clip(min=0),
      batch_size=cfg.train.batch_size,
      seed=cfg.train.seed,
      group=cfg.optim.n_critic,
      balance=cfg.data.balance,
      subset=self.usable,
      num_shards=num_shards,
      shard_index=shard_index,
      conditions=self.conditions,
    )


def slice_options(cfg: Config) -> SliceOptions:
  """The cache-defining options a config asks for."""
  d = cfg.data
  return SliceOptions(
    sample_rate=d.sample_rate,
    slice_len=cfg.model.slice_len,
    channels=cfg.model.channels,
    mode=d.slice_mode,
    hop=d.slice_hop,
    pad_mode=d.pad_mode,
    silence_db=d.silence_db,
    trim_db=d.trim_db or None,
    normalize=d.normalize,
    loudness_lufs=d.loudness_lufs,
    max_seconds=d.max_seconds,
  )


def adopt_cache_options(cfg: Config, cache: PreparedCache) -> Config:
  """`cfg` with the data options `cache` was prepared with; its window shape must fit the model.

  Raises:
    ConfigError: the cache's window length or channel count differs from the model's.
  """
  o = cache.options
  m = cfg.model
  if (o.slice_len, o.channels) != (m.slice_len, m.channels):
    raise ConfigError(
      f"{cache.path} holds {o.slice_len}-sample windows with {o.channels} channel(s) but the "
      f"model wants model.slice_len={m.slice_len}, model.channels={m.channels}; pass "
      f"--set model.slice_len={o.slice_len} --set model.channels={o.channels}, or prepare again"
    )
  data = dataclasses.replace(
    cfg.data,
    sample_rate=o.sample_rate,
    slice_mode=o.mode,
    slice_hop=o.hop,
    pad_mode=o.pad_mode,
    silence_db=-120.0 if o.silence_db is None else o.silence_db,
    trim_db=o.trim_db or 0.0,
    normalize=o.normalize,
    loudness_lufs=o.loudness_lufs,
    max_seconds=o.max_seconds,
    store_dtype=cache.dtype,
  )
  return dataclasses.replace(cfg, data=data)


def prepared_path(folder: str, opts: SliceOptions, dtype: str, manifest: str) -> str:
  """Where a folder's prepared cache lives: one per (folder, options, manifest)."""
  real = os.path.realpath(folder)
  key = json.dumps(
    [real, dataclasses.asdict(opts), dtype, os.path.realpath(manifest) if manifest else ""],
    sort_keys=True,
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(default_cache_root(), PREPARED_DIR, f"{os.path.basename(real)}-{digest}")


def load_data(
  cfg: Config, *, progress: bool = False, log: Callable[[str], None] = print
) -> tuple[Config, TrainData]:
  """Prepares (or opens) the run's data and labels every clip.

  Args:
    cfg: the requested config; `data.path` is a folder, a cache, or "" for the built-in corpus.
    progress: show progress bars.
    log: where skipped files and the summary line go.

  Returns:
    The config with the data options actually used, and the data.

  Raises:
    DataError: no usable audio, or an unknown label field.
    ConfigError: a cache whose windows do not fit the model.
  """
  d = cfg.data
  if d.path and is_cache(d.path):
    cache = open_cache(d.path)
    cfg = adopt_cache_options(cfg, cache)
    summary = summarize(len(cache.files), len(cache), cache.skipped)
    log(f"using prepared cache {d.path}")
    if d.manifest:
      log("data.manifest is not read: the cache carries the labels it was prepared with")
  else:
    if not d.path and d.sample_rate < MIN_CORPUS_RATE:
      raise ConfigError(
        f"data.sample_rate={d.sample_rate}: the built-in corpus is made at {MIN_CORPUS_RATE} Hz "
        "or more; pass a higher rate or --data FOLDER"
      )
    # The built-in one-shots are synthesised at the run's rate (pitches and decays in Hz and
    # seconds), 1 s each: longer slices hold the whole sound and silence after it.
    folder = d.path or builtin_corpus(per_class=d.builtin_per_class, sample_rate=d.sample_rate)
    opts = slice_options(cfg)
    out = prepared_path(folder, opts, d.store_dtype, d.manifest)
    report = prepare(
      folder,
      out,
      opts,
      dtype=d.store_dtype,
      manifest=d.manifest or None,
      workers=d.prepare_workers or None,
      progress=progress,
      log=log,
    )
    if report.decoded:
      log(
        f"prepared {report.decoded} files ({report.seconds_decoded:.0f} s of audio) in "
        f"{report.wall_seconds:.1f} s into {out}"
      )
    cache = open_cache(out)
    summary = report.summary()
  names, attr_names = list(d.label_field), list(d.attributes)
  fields = [cache.label_field(f) for f in names] if names else [cache.label_field("")]
  keep = np.ones(len(cache), bool)
  columns = []
  for field in fields:
    ids, vocab = _field_ids(cache, field, log)
    keep &= ids >= 0
    columns.append((field, ids, vocab))
  if not keep.any():
    raise DataError(f"{cache.path}: no clip has every label of {', '.join(fields)}")
  first_ids = np.where(keep, columns[0][1], -1).astype(np.int32)
  log(summary)
  if len(columns) == 1 and not attr_names:
    return cfg, TrainData(cache, first_ids, columns[0][2], summary)
  attributes, values = [], []
  for name in attr_names:
    raw, log_scale = attribute_values_of(cache, name)
    attr = Attribute.fit(name, raw[keep], log_scale)
    unknown = int(np.sum(~np.isfinite(attr.standardize(raw)[keep])))
    if unknown:
      log(f"{unknown} clips have no {name} (e.g. unpitched): they are trained at the corpus mean")
    attributes.append(attr)
    values.append(raw)
  conditioning = Conditioning(tuple((f, v) for f, _, v in columns), tuple(attributes))
  ids = np.stack([c[1].clip(min=0) for c in columns], axis=1).astype(np.int32)  # [N, K]
  raw = np.stack(values, axis=1) if values else np.zeros((len(cache), 0), np.float32)
  return cfg, TrainData(
    cache, first_ids, columns[0][2], summary, conditioning, ids, raw.astype(np.float32)
  )


def _field_ids(
  cache: PreparedCache, field: str, log: Callable[[str], None]
) -> tuple[np.ndarray, tuple[str, ...]]:
  """Ids [N] (-1 for clips the field leaves blank) and the vocabulary of one label field."""
  ids, vocab = cache.labels(field)
  if "" in vocab:  # files the label field leaves blank
    missing = int(np.sum(ids == vocab.index("")))
    log(f"{missing} clips have no {field!r} label and are left out")
    keep = [v for v in vocab if v]
    remap = np.array([keep.index(v) if v else -1 for v in vocab], np.int32)
    ids, vocab = remap[ids], tuple(keep)
  if not vocab:
    raise DataError(f"{cache.path}: no clip has a {field!r} label")
  return ids, vocab


FEATURE_DIR = "features"


def _cache_key(cache: PreparedCache) -> str:
  """A short digest of the cache's index: what it holds, for files derived from it."""
  with open(os.path.join(cache.path, "cache.json"), "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def attribute_values_of(cache: PreparedCache, name: str) -> tuple[np.ndarray, bool]:
  """Raw values [N] of attribute `name` and whether it is modelled on a log scale.

  A manifest column is used as it is. "pitch" and "brightness" (Hz, log scale) are otherwise
  measured on the clips once and kept next to the cache, keyed by its index, so later runs and
  evaluations read them back.

  Raises:
    DataError: neither a manifest attribute nor a computable one.
  """
  if name in cache.attribute_names:
    return cache.attributes()[name], False
  if name not in features.ATTRIBUTES:
    valid = [*cache.attribute_names, *features.ATTRIBUTES]
    raise DataError(f"{cache.path}: unknown attribute {name!r}; valid: {', '.join(valid)}")
  path = os.path.join(cache.path, FEATURE_DIR, f"{name}-{_cache_key(cache)}.npy")
  if os.path.exists(path):
    return np.load(path), True
  chunk = 256
  out = [
    features.compute(
      name, cache.gather(np.arange(i, min(i + chunk, len(cache)))), cache.sample_rate
    )
    for i in range(0, len(cache), chunk)
  ]
  values = np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
  buffer = io.BytesIO()
  np.save(buffer, values)
  files.write_bytes(path, buffer.getvalue())
  return values, True


def corpus_statistics(cache: PreparedCache, cfg: Config) -> dict[str, list[float]] | None:
  """The corpus statistics the run's model kind needs, over every clip of the cache.

  SpecGAN's are the per-bin log-magnitude mean and std; a kind without statistics gets None.
  Measured once per cache and model settings (`ModelKind.statistics_file`) and kept next to the
  cache (JSON, keyed by its index), so there is no separate statistics step; runs store the
  statistics they trained with.

  Raises:
    ConfigError: `model.kind` is unknown.
  """
  from wavegan.models import kinds  # pylint: disable=g-import-not-at-top  (jax)

  kind = kinds.kind_of(cfg.model)
  if kind.statistics is None:
    return None
  stem = kind.statistics_file(cfg.model)
  path = os.path.join(cache.path, FEATURE_DIR, f"{stem}-{_cache_key(cache)}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  chunk = 256
  batches = (
    cache.gather(np.arange(i, min(i + chunk, len(cache)))) for i in range(0, len(cache), chunk)
  )
  stats = kind.measure(batches, cfg.model)
  files.write_json(path, stats, indent=None)
  return stats
