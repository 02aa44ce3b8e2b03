"""Training clips in memory: `ClipSet`, `load_clips` (a folder into one) and `skip_summary`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines.audio_io import AUDIO_EXTENSIONS, AudioDecodeError, DataError, scan_folder
from data_pipelines.manifest import read_manifest
from data_pipelines.preprocess import SliceOptions, process_file
from data_pipelines.progress import progress_bar
from data_pipelines.reports import summarize


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


def skip_summary(clips: ClipSet) -> str:
  """`summarize` for clips loaded into memory."""
  used = len(set(clips.sources)) if clips.sources else len(clips)
  return summarize(used, len(clips), clips.skipped)


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
  for f in progress_bar(files, progress, desc="loading audio"):
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
