"""Training clips held in memory and a deterministic, resumable batch source.

`load_clips` turns a folder of labelled one-shots into one `[N, T, C]` array. `BatchSource.get`
then maps a training step to its batches as a pure function of (data, seed, step): the sample
stream is the dataset reshuffled every epoch, and batch k is simply elements
`k * batch_size ... (k + 1) * batch_size - 1` of that stream. Resuming at step s therefore needs no
iterator state in the checkpoint and yields exactly the batches an uninterrupted run would.

Only numpy is used here (no jax): the trainer moves batches to devices itself.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines.audio_io import (
  AUDIO_EXTENSIONS,
  MAX_SECONDS,
  AudioDecodeError,
  DataError,
  decode,
  scan_folder,
)
from data_pipelines.manifest import read_manifest
from data_pipelines.slicing import loud_enough, slice_windows, trim_leading_silence, window_offsets

NORMALIZE_PEAK = 0.95
SILENCE_PEAK = 1e-6  # -120 dBFS: quieter windows carry nothing G could learn from


@dataclasses.dataclass(frozen=True, eq=False)
class ClipSet:
  """Equal-length training clips with integer style labels.

  Attributes:
    audio: clips, float32 [N, T, C].
    labels: style id of each clip, int32 [N], indexing `styles`.
    styles: style names sorted alphabetically; `styles[label]` is the name of a label id.
    skipped: (path, reason) for each file that could not be used, and each sub-folder that could
      not be listed (its path ends in a separator).
    sources: source file of each clip (empty when not known).
    offsets: start sample of each clip in its source file, after any leading-silence trim,
      int64 [N] (None when not known).
    attributes: continuous attributes from a manifest, float32 [N] each.
  """

  audio: np.ndarray  # float32 [N, T, C]
  labels: np.ndarray  # int32 [N]
  styles: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...] = ()
  sources: tuple[str, ...] = ()
  offsets: np.ndarray | None = None
  attributes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> [N]

  def __post_init__(self):
    if self.audio.ndim != 3 or self.labels.shape != self.audio.shape[:1]:
      raise ValueError(
        "ClipSet wants audio [N, T, C] and labels [N];"
        f" got {self.audio.shape} and {self.labels.shape}"
      )

  def __len__(self) -> int:
    return self.audio.shape[0]

  @property
  def num_styles(self) -> int:
    return len(self.styles)


def reason_kind(reason: str) -> str:
  """A skip reason's category for summaries, e.g. 'cannot decode (...)' -> 'unreadable'.

  Truncated files and permission problems are kinds of their own: each has its own remedy (copy
  the file again; fix its permissions), which a plain "unreadable" would hide.
  """
  for prefix, kind in (
    ("truncated", "truncated"),
    ("permission denied", "permission denied"),
    ("cannot decode", "unreadable"),
    ("cannot read", "unreadable"),
    ("no such file", "unreadable"),
    ("is a folder", "unreadable"),
    ("a part of the path", "unreadable"),
    ("empty", "empty"),
    ("shorter than", "too short"),
    ("longer than", "too long"),
    ("contains NaN", "NaN/Inf"),
    ("silent", "silent"),
    ("cannot make", "too few channels"),
    ("not in the manifest", "not in the manifest"),
    ("no '", "unlabelled in the manifest"),
  ):
    if reason.startswith(prefix):
      return kind
  return "other"


def summarize(files_used: int, clips: int, skipped: tuple[tuple[str, str], ...]) -> str:
  """One line on what was used and skipped: '2031 files used (2031 clips), 5 skipped: 3 unreadable, 2 too short'."""
  line = f"{files_used} files used ({clips} clips), {len(skipped)} skipped"
  if not skipped:
    return line
  counts: dict[str, int] = {}
  for _, reason in skipped:
    kind = reason_kind(reason)
    counts[kind] = counts.get(kind, 0) + 1
  return (
    line
    + ": "
    + ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
  )


def skip_summary(clips: ClipSet) -> str:
  """`summarize` for clips loaded into memory."""
  used = len(set(clips.sources)) if clips.sources else len(clips)
  return summarize(used, len(clips), clips.skipped)


def _progress(items, enabled: bool, desc: str, total: int | None = None):
  """Wraps `items` in a tqdm bar when `enabled` (tqdm is only imported then)."""
  if not enabled:
    return items
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm(items, desc=desc, unit="file", total=total, dynamic_ncols=True)


NORMALIZE_MODES = ("peak", "loudness", "none")
LOUDNESS_PEAK_LIMIT = 0.99  # loudness gain never pushes a clip's peak past this


@dataclasses.dataclass(frozen=True)
class SliceOptions:
  """How one audio file becomes training windows (everything that decides a cache's content).

  Attributes:
    sample_rate: target rate in Hz; files are resampled to it (soxr HQ).
    slice_len: samples per window T.
    channels: channels per window C (mono mixdown, or channels kept/duplicated).
    mode: "first" (the onset window, for one-shots) or "hop" (every `hop` samples).
    hop: samples between window starts in "hop" mode; 0 means `slice_len` (no overlap).
    pad_mode: windows past a file's end: "zero", "reflect", "loop" or "drop".
    silence_db: leave out windows whose RMS is below this level (dBFS); None keeps every window
      that is not digitally silent (peak at or above -120 dBFS).
    trim_db: drop each file's leading samples quieter than this (dBFS); None = off.
    normalize: "peak" (each file's windows to peak 0.95), "loudness" (each file to
      `loudness_lufs` by ITU-R BS.1770, peak limited to 0.99) or "none".
    loudness_lufs: integrated loudness target for `normalize="loudness"`.
    max_seconds: longer files are refused before they are read (one would fill memory).
  """

  sample_rate: int = 16000
  slice_len: int = 16384
  channels: int = 1
  mode: str = "first"
  hop: int = 0
  pad_mode: str = "zero"
  silence_db: float | None = None
  trim_db: float | None = None
  normalize: str = "peak"
  loudness_lufs: float = -20.0
  max_seconds: float = MAX_SECONDS

  def validate(self) -> SliceOptions:
    """Checks every option; returns self.

    Raises:
      ValueError: an option out of range or not one of its choices.
    """
    if self.sample_rate < 1 or self.slice_len < 1 or self.channels < 1 or self.hop < 0:
      raise ValueError(f"need sample_rate, slice_len, channels >= 1 and hop >= 0; got {self}")
    if self.normalize not in NORMALIZE_MODES:
      raise ValueError(f"normalize={self.normalize!r}: must be one of {NORMALIZE_MODES}")
    window_offsets(1, self.slice_len, self.hop or self.slice_len, self.pad_mode, self.mode)
    return self

  @property
  def hop_samples(self) -> int:
    return self.hop or self.slice_len


def loudness_gain(x: np.ndarray, sample_rate: int, target_lufs: float) -> float:
  """Gain that brings x [T, C] to `target_lufs` integrated loudness (1.0 for silence)."""
  import pyloudnorm  # pylint: disable=g-import-not-at-top  (scipy import: only when used)

  if x.shape[1] > 5:  # BS.1770 weights at most 5 channels: measure the mixdown instead
    x = x.mean(axis=1, keepdims=True)
  # BS.1770 gates 400 ms blocks; one-shots can be shorter, so the block shrinks to fit (a hair
  # under the clip's length: pyloudnorm compares in floating point and refuses a tie).
  block = min(0.4, x.shape[0] / sample_rate * (1 - 1e-9))
  with np.errstate(divide="ignore"):
    lufs = pyloudnorm.Meter(sample_rate, block_size=block).integrated_loudness(x.astype(np.float64))
  if not np.isfinite(lufs):
    return 1.0
  return float(10.0 ** ((target_lufs - lufs) / 20.0))


def process_file(path: str, opts: SliceOptions) -> tuple[np.ndarray, np.ndarray, int]:
  """Decodes one file and cuts it into normalised training windows.

  The file is decoded (channels matched, resampled), optionally trimmed of leading silence, cut
  into windows (`opts.mode`, `opts.pad_mode`), near-silent windows are left out, and the rest are
  scaled together (`opts.normalize`), so a file's windows keep their relative levels.

  Args:
    path: audio file.
    opts: slicing options.

  Returns:
    windows float32 [W, slice_len, channels] (W >= 1), their start samples int64 [W] (counted
    after any leading-silence trim), and the decoded length in samples at `opts.sample_rate`.

  Raises:
    AudioDecodeError: the file cannot be decoded or yields no usable window; `reason` says why.
  """
  x = decode(path, opts.sample_rate, opts.channels, max_seconds=opts.max_seconds)  # [T, C]
  length = x.shape[0]
  if opts.trim_db is not None:
    x = trim_leading_silence(x, opts.trim_db)
  starts = window_offsets(x.shape[0], opts.slice_len, opts.hop_samples, opts.pad_mode, opts.mode)
  if starts.size == 0:
    reason = (
      "silent" if x.shape[0] == 0 else f"shorter than {opts.slice_len} samples (pad_mode=drop)"
    )
    raise AudioDecodeError(path, reason)
  windows = slice_windows(x, starts, opts.slice_len, opts.pad_mode)  # [W, T, C]
  if opts.silence_db is None:
    keep = np.max(np.abs(windows), axis=(1, 2)) >= SILENCE_PEAK
  else:
    keep = loud_enough(windows, opts.silence_db)
  windows, starts = windows[keep], starts[keep]
  if windows.shape[0] == 0:
    level = f"{opts.silence_db:g} dBFS" if opts.silence_db is not None else "-120 dBFS"
    where = f"in its first {opts.slice_len} samples" if opts.mode == "first" else "in every window"
    raise AudioDecodeError(path, f"silent {where} (below {level})")
  peak = float(np.max(np.abs(windows)))
  if opts.normalize == "peak":
    windows *= NORMALIZE_PEAK / peak
  elif opts.normalize == "loudness":
    gain = loudness_gain(x, opts.sample_rate, opts.loudness_lufs)
    windows *= min(gain, LOUDNESS_PEAK_LIMIT / peak)
  return windows, starts, length


def load_clips(
  root: str,
  *,
  sample_rate: int,
  slice_len: int,
  channels: int = 1,
  normalize: bool | str = True,
  progress: bool = False,
  mode: str = "first",
  hop: int | None = None,
  pad_mode: str = "zero",
  silence_db: float | None = None,
  trim_db: float | None = None,
  manifest: str | None = None,
  label_field: str = "",
) -> ClipSet:
  """Loads every audio file under `root` into memory as training clips labelled by its sub-folder.

  Each file goes through `process_file` (see `SliceOptions` for what each option does). Files that
  cannot be decoded, or that yield no window, are skipped and listed in `ClipSet.skipped`: one bad
  file never stops a run. For large collections, `prepare` builds an on-disk cache instead.

  Args:
    root: folder with one sub-folder per style (files directly in `root` get its name as label).
    sample_rate: target rate in Hz.
    slice_len: samples per clip T.
    channels: channels per clip C.
    normalize: "peak", "loudness" or "none" (True means "peak", False "none").
    progress: show a tqdm progress bar.
    mode: "first" or "hop".
    hop: samples between window starts in "hop" mode (default: slice_len, no overlap).
    pad_mode: "zero", "reflect", "loop" or "drop".
    silence_db: leave out windows whose RMS is below this level in dBFS (default: only windows
      that are digitally silent, peak below -120 dBFS).
    trim_db: drop each file's leading samples quieter than this level in dBFS (default: off).
    manifest: CSV or JSON file mapping files to labels and attributes (see `manifest.py`); the
      style is its `label_field` instead of the sub-folder name, and files it does not list are
      skipped.
    label_field: the manifest field that names the style (default: its only label field).

  Returns:
    The usable clips: audio float32 [N, T, C], labels int32 [N], sorted style names, skipped files,
    and each clip's source file and offset.

  Raises:
    DataError: `root` is missing or a file, holds no audio files, or none of them could be used.
    ValueError: `slice_len`, `hop`, `mode` or `pad_mode` is invalid.
  """
  if isinstance(normalize, bool):
    normalize = "peak" if normalize else "none"
  opts = SliceOptions(
    sample_rate=sample_rate,
    slice_len=slice_len,
    channels=channels,
    mode=mode,
    hop=hop or 0,
    pad_mode=pad_mode,
    silence_db=silence_db,
    trim_db=trim_db,
    normalize=normalize,
  ).validate()
  skipped: list[tuple[str, str]] = []  # starts with the sub-folders the scan could not list
  files = scan_folder(root, skipped)
  if not files:
    raise DataError(
      f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})"
      + (f"; {skipped[0][0]}: {skipped[0][1]}" if skipped else "")
    )
  table = read_manifest(manifest, root) if manifest else None
  field = table.label_field(label_field) if table else ""
  attrs: dict[str, list[np.ndarray]] = {
    name: [] for name in (table.attribute_names if table else ())
  }
  chunks: list[np.ndarray] = []
  used_labels: list[str] = []
  sources: list[str] = []
  offsets: list[np.ndarray] = []
  for f in _progress(files, progress, desc="loading audio"):
    label = f.label
    if table is not None:
      key = os.path.normpath(os.path.abspath(f.path))
      if key not in table.labels:
        skipped.append((f.path, "not in the manifest"))
        continue
      label = table.labels[key][field]
      if not label:
        skipped.append((f.path, f"no {field!r} label in the manifest"))
        continue
    try:
      windows, starts, _ = process_file(f.path, opts)  # [W, T, C], [W]
    except AudioDecodeError as err:
      skipped.append((f.path, err.reason))
      continue
    chunks.append(windows)
    used_labels.extend([label] * windows.shape[0])
    for name in attrs:
      attrs[name].append(np.full(windows.shape[0], table.attributes[key][name], np.float32))
    sources.extend([f.path] * windows.shape[0])
    offsets.append(starts)
  if not used_labels:
    path, reason = skipped[0]
    raise DataError(
      f"{root}: none of the {len(files)} audio files could be used: e.g. {path}: {reason}"
    )
  skipped.sort()
  styles = tuple(sorted(set(used_labels)))
  ids = {name: i for i, name in enumerate(styles)}
  labels = np.array([ids[name] for name in used_labels], dtype=np.int32)  # [N]
  return ClipSet(
    audio=np.concatenate(chunks),
    labels=labels,
    styles=styles,
    skipped=tuple(skipped),
    sources=tuple(sources),
    offsets=np.concatenate(offsets).astype(np.int64),
    attributes={name: np.concatenate(v) for name, v in attrs.items()},
  )


class BatchSource:
  """Deterministic batches of clips: `get(step)` is a pure function of (data, seed, step).

  The stream of clip indices is an infinite sequence of epochs, each a fresh order of the clips
  derived from (seed, epoch) alone, so any batch can be computed without the ones before. An epoch
  is a permutation of the clips or, with `balance`, an equal number of draws from every style
  (each style's clips permuted and repeated up to the largest style's count), shuffled together.
  Global batch k is stream elements `k * batch_size ... (k + 1) * batch_size - 1`, freely spanning
  epoch boundaries, and training step s consumes batches `s * group ... s * group + group - 1`
  (e.g. group = n_critic discriminator batches per step). Datasets smaller than a batch simply
  wrap around.

  With `num_shards > 1` (one shard per JAX process), `batch_size` is the global batch and this
  shard returns the contiguous rows `[shard_index * b, (shard_index + 1) * b)` of every batch,
  where b = batch_size // num_shards; the shards together read exactly the unsharded batch.

  Attributes:
    batch_size: global batch size.
    group: batches per step.
    seed: shuffle seed.
    num_shards: number of shards each batch is split into.
    shard_index: which shard this source returns.
    balance: whether epochs draw every style equally often.
  """

  def __init__(
    self,
    data,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    seed: int = 0,
    group: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    balance: bool = False,
    subset: np.ndarray | None = None,
    conditions: np.ndarray | None = None,
  ):
    """Builds the source.

    Args:
      data: a `ClipSet`, an audio array float32 [N, T, C], or a clip store with `len()` and
        `gather(index) -> float32 [..., T, C]` (e.g. a `PreparedCache`).
      labels: int [N] labels (default all zeros); must be None for a `ClipSet`, which has its own.
      batch_size: global batch size, >= 1 and divisible by `num_shards`.
      seed: shuffle seed, >= 0.
      group: batches per step, >= 1.
      num_shards: shards per batch, >= 1.
      shard_index: shard to return, in [0, num_shards).
      balance: draw every style equally often in each epoch.
      subset: the clip indices to draw from (default: all N).
      conditions: what batches carry instead of the labels, one row per clip [N, ...] (e.g. style
        vectors of several label fields and attributes); the labels still drive `balance`.

    Raises:
      ValueError: empty data, mismatched labels, or an invalid size/seed/shard argument.
    """
    if isinstance(data, ClipSet):
      if labels is not None:
        raise ValueError("labels must be None when data is a ClipSet (it has its own)")
      data, labels = data.audio, data.labels
    if isinstance(data, np.ndarray):
      if data.ndim != 3:
        raise ValueError(f"audio must be a non-empty [N, T, C] array; got shape {data.shape}")
      audio = np.ascontiguousarray(data, dtype=np.float32)  # [N, T, C]
      self._gather = audio.__getitem__
    else:
      self._gather = data.gather
    n = len(data)
    labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels)
    if labels.shape != (n,):
      raise ValueError(f"labels shape {labels.shape} does not match {n} clips")
    pool = np.arange(n, dtype=np.int64) if subset is None else np.asarray(subset, np.int64)
    if pool.size == 0:
      raise ValueError("no clips to draw from")
    if batch_size < 1 or group < 1 or seed < 0:
      raise ValueError(
        f"need batch_size >= 1, group >= 1, seed >= 0; got {batch_size}, {group}, {seed}"
      )
    if num_shards < 1 or not 0 <= shard_index < num_shards or batch_size % num_shards:
      raise ValueError(
        f"shard_index={shard_index}, num_shards={num_shards}: need 0 <= shard_index < num_shards"
        f" and num_shards dividing batch_size={batch_size}"
      )
    self._labels = np.ascontiguousarray(labels, dtype=np.int32)  # [N]
    if conditions is not None and len(conditions) != n:
      raise ValueError(f"conditions for {len(conditions)} clips; there are {n}")
    self._carried = self._labels if conditions is None else np.ascontiguousarray(conditions)
    self._pool = pool  # [M] clip ids drawn from
    self.batch_size = batch_size
    self.group = group
    self.seed = seed
    self.num_shards = num_shards
    self.shard_index = shard_index
    self.balance = balance
    # Balanced epochs: the pool split by style, each style drawn max-count times per epoch.
    self._by_style = [pool[self._labels[pool] == k] for k in np.unique(self._labels[pool])]
    self._epoch_len = (
      len(self._by_style) * max(len(c) for c in self._by_style) if balance else len(pool)
    )
    # Orders of the epochs the last request touched; batches are then plain numpy gathers.
    # (grain's random-access index_shuffle was measured at ~50 us per element for a few hundred
    # clips, ~17 ms of CPU per training step on the built-in corpus; numpy's is microseconds.)
    self._epoch_cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    """Number of clips drawn from."""
    return len(self._pool)

  @property
  def epoch_len(self) -> int:
    """Stream elements per epoch: the clips, or styles x the largest style's clip count."""
    return self._epoch_len

  @property
  def local_batch_size(self) -> int:
    """Rows of each batch this shard returns."""
    return self.batch_size // self.num_shards

  @property
  def steps_per_epoch(self) -> float:
    """Training steps per epoch (fractional in general)."""
    return self._epoch_len / (self.batch_size * self.group)

  def epoch_permutation(self, epoch: int) -> np.ndarray:
    """The clips epoch `epoch` visits, in order.

    Args:
      epoch: epoch number, >= 0.

    Returns:
      Clip indices, int64 [epoch_len]: a permutation of the pool, or with `balance` an equal
      number of clips of every style.
    """
    if epoch < 0:
      raise ValueError(f"epoch={epoch}: must be >= 0")
    cached = self._epoch_cache.get(epoch)
    if cached is not None:
      return cached
    # SeedSequence mixes (seed, epoch) so nearby seeds and epochs give unrelated orders.
    rng = np.random.default_rng([self.seed, epoch, 0x5EED])
    if not self.balance:
      return self._pool[rng.permutation(len(self._pool))]
    per_style = self._epoch_len // len(self._by_style)
    draws = []
    for members in self._by_style:
      repeats = -(-per_style // len(members))
      order = np.concatenate([rng.permutation(members) for _ in range(repeats)])
      draws.append(order[:per_style])
    return rng.permutation(np.concatenate(draws))

  def _lookup(self, positions: np.ndarray) -> np.ndarray:
    """Clip indices at the given stream positions (any shape), refreshing the epoch cache."""
    epochs, offsets = np.divmod(positions, self._epoch_len)  # same shape as positions
    needed = np.unique(epochs)  # [E], sorted
    perms = {int(e): self.epoch_permutation(int(e)) for e in needed}
    self._epoch_cache = perms  # keep just these: the next step starts in the last of them
    table = np.stack([perms[int(e)] for e in needed])  # [E, epoch_len]
    return table[np.searchsorted(needed, epochs), offsets]

  def stream_indices(self, start: int, stop: int) -> np.ndarray:
    """Clip indices at positions `start .. stop - 1` of the infinite shuffled stream.

    Args:
      start: first stream position, >= 0.
      stop: one past the last position.

    Returns:
      Clip indices, int64 [stop - start].
    """
    if start < 0 or stop < start:
      raise ValueError(f"need 0 <= start <= stop; got {start}, {stop}")
    if stop == start:
      return np.zeros(0, np.int64)
    return self._lookup(np.arange(start, stop, dtype=np.int64))

  def step_indices(self, step: int) -> np.ndarray:
    """Clip indices of this shard's rows for training step `step`.

    Args:
      step: training step, >= 0.

    Returns:
      Clip indices, int64 [group, local_batch_size].
    """
    if step < 0:
      raise ValueError(f"step={step}: must be >= 0")
    b = self.local_batch_size
    first_batch = step * self.group
    # Row r of global batch k sits at stream position k * batch_size + r; this shard's rows are
    # the contiguous block starting at shard_index * b.
    batch_starts = (first_batch + np.arange(self.group, dtype=np.int64)) * self.batch_size
    positions = (batch_starts + self.shard_index * b)[:, None] + np.arange(b)[None, :]  # [G, b]
    return self._lookup(positions)

  def get(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches of training step `step`.

    Args:
      step: training step, >= 0.

    Returns:
      audio float32 [group, local_batch_size, T, C] and labels int32 [group, local_batch_size]
      (or the `conditions` rows [group, local_batch_size, ...]).
    """
    idx = self.step_indices(step)  # [G, b]
    return self._gather(idx), self._carried[idx]

  def iterate(self, start_step: int = 0):
    """Yields `get(start_step)`, `get(start_step + 1)`, ... forever.

    Args:
      start_step: first step (the resume point).

    Yields:
      (audio float32 [group, local_batch_size, T, C], labels int32 [group, local_batch_size]).
    """
    step = start_step
    while True:
      yield self.get(step)
      step += 1
