"""Labels from a manifest file instead of folder names.

A manifest maps audio files (paths relative to the data folder, or absolute) to label fields
(e.g. `instrument`, `technique`) and continuous attributes (e.g. `pitch`):

  CSV:   path,instrument,technique,pitch          JSON: [{"path": "a.wav", "instrument": "snare",
         a.wav,snare,rimshot,0.62                         "pitch": 0.62}, ...]
                                                   or {"a.wav": {"instrument": "snare"}, ...}

Values that parse as numbers in every row are attributes; the others are label fields.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

from data_pipelines.audio_io import DataError

PATH_COLUMNS = ("path", "file", "filename")


@dataclasses.dataclass(frozen=True)
class Manifest:
  """Per-file labels and attributes, keyed by absolute, normalised path."""

  labels: dict[str, dict[str, str]]  # path -> {field: value}
  attributes: dict[str, dict[str, float]]  # path -> {name: value}
  label_fields: tuple[str, ...]
  attribute_names: tuple[str, ...]

  def label_field(self, requested: str = "") -> str:
    """The field that names a clip's style: `requested`, or the manifest's only label field."""
    if requested:
      if requested not in self.label_fields:
        raise DataError(
          f"manifest has no label field {requested!r}; "
          f"valid: {', '.join(self.label_fields) or '(none)'}"
        )
      return requested
    if len(self.label_fields) != 1:
      raise DataError(
        f"manifest has label fields {', '.join(self.label_fields) or '(none)'}: "
        "choose one with data.label_field"
      )
    return self.label_fields[0]


def _rows(path: str) -> list[dict[str, object]]:
  if path.lower().endswith(".json"):
    with open(path) as f:
      data = json.load(f)
    if isinstance(data, dict):
      return [{"path": k, **(v if isinstance(v, dict) else {"label": v})} for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
      return data
    raise DataError(f"{path}: expected a list of objects or an object keyed by file path")
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _is_number(value: object) -> bool:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return True
  try:
    float(str(value))
    return True
  except ValueError:
    return False


def read_manifest(path: str, data_root: str) -> Manifest:
  """Reads a CSV or JSON manifest; relative file paths are taken from `data_root`."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such manifest file")
  try:
    rows = _rows(path)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
    raise DataError(f"{path}: cannot read manifest ({err})") from None
  if not rows:
    raise DataError(f"{path}: manifest has no rows")
  columns = list(rows[0].keys())
  key = next((c for c in PATH_COLUMNS if c in columns), None)
  if key is None:
    raise DataError(
      f"{path}: no file column (one of {', '.join(PATH_COLUMNS)}); columns: {', '.join(columns)}"
    )
  fields = [c for c in columns if c != key]
  numeric = [c for c in fields if all(_is_number(r.get(c, "")) for r in rows)]
  text = [c for c in fields if c not in numeric]
  labels, attributes = {}, {}
  for r in rows:
    file = os.path.normpath(os.path.abspath(os.path.join(data_root, str(r[key]))))
    labels[file] = {c: str(r.get(c, "")) for c in text}
    attributes[file] = {c: float(r[c]) for c in numeric}
  return Manifest(labels, attributes, tuple(text), tuple(numeric))
