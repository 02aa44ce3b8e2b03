"""Exported models: one self-contained, code-free file with the EMA generator of a run.

The file is a safetensors file (an 8-byte header length, a JSON header padded with spaces, then
raw arrays: loading it runs no code, unlike a pickle). The header's metadata holds the format name
and version, the model config, the style names, the sample rate, facts about the run (preset,
step), the conditioning and STFT moments of runs that have them (JSON), and a SHA-256 digest.

Format version 2 seals the whole file: the digest is taken over every byte of it (length prefix,
header, padding and arrays) with the digest's own 64 characters read as zeros, so one changed
byte anywhere is refused with a one-line `ModelFileError`, before any model is built, instead of
producing wrong audio. Version 1 files (whose digest covers the arrays' names, dtypes, shapes and
bytes only) are still read, with that weaker check.

Reading needs numpy, safetensors, jax and flax only: no optimiser, checkpoint or data code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any

import numpy as np
from flax import traverse_util

from wavegan.config import ConfigError, ModelConfig, section_from_dict
from wavegan.errors import one_line
from wavegan.files import atomic_path
from wavegan.models import kinds

FORMAT = "wavegan-generator"
FORMAT_VERSION = 2
ARRAYS_ONLY_VERSION = 1  # older files: the digest covers the arrays, not the metadata
SEPARATOR = "/"
DIGEST_KEY = "sha256"
_PLACEHOLDER = "0" * 64  # the digest's place while the file's digest is computed
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PREFIX = 8  # safetensors: little-endian u64 header length


class ModelFileError(ConfigError):
  """An exported model file that cannot be used (missing, truncated, altered, other format)."""


@dataclasses.dataclass(frozen=True)
class ExportedModel:
  """What an exported file holds.

  Attributes:
    model: the generator's config.
    styles: style names (empty for an unconditional model).
    sample_rate: the rate the model was trained at, in Hz.
    params: the EMA generator's parameters as a pure dict of numpy arrays.
    info: anything else from the run (preset, training step), informational.
    extras: what synthesis needs besides the config: the conditioning (several label fields,
      attributes) and SpecGAN's STFT moments, when the run has them.
  """

  model: ModelConfig
  styles: tuple[str, ...]
  sample_rate: int
  params: dict[str, Any]
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def _key(path: tuple[Any, ...]) -> str:
  """A path of nested dict keys, ("ups", 0, "kernel") -> "ups/0/kernel"."""
  return SEPARATOR.join(str(k) for k in path)


def flatten(params: dict[str, Any]) -> dict[str, np.ndarray]:
  """Parameters as nested dicts (`nnx.to_pure_dict`'s) -> {"ups/0/kernel": array}."""
  flat = traverse_util.flatten_dict(params)  # {("ups", 0, "kernel"): array}
  return {_key(path): np.asarray(leaf) for path, leaf in flat.items()}


def digest(tensors: dict[str, np.ndarray]) -> str:
  """SHA-256 over every array's name, dtype, shape and bytes, in name order (version 1 files and
  the classifier cache)."""
  h = hashlib.sha256()
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def file_digest(data: bytes, start: int, stop: int) -> str:
  """SHA-256 of a whole file's bytes with `data[start:stop]` (where the digest is kept) as zeros."""
  view = memoryview(data)
  h = hashlib.sha256(view[:start])
  h.update(b"0" * (stop - start))
  h.update(view[stop:])
  return h.hexdigest()


def _damaged(path: str, why: str) -> ModelFileError:
  return ModelFileError(one_line(f"{path}: not a readable model file ({why})"))


def _altered(path: str) -> ModelFileError:
  return ModelFileError(
    one_line(
      f"{path}: the file does not match its checksum (it was altered or damaged; export it again)"
    )
  )


def _read_header(path: str, data: bytes) -> tuple[int, dict[str, str]]:
  """(end of the header, its `__metadata__`) of a safetensors file's bytes, parsed by hand so
  that any damage is a `ModelFileError`."""
  if len(data) < _PREFIX:
    raise _damaged(path, f"{len(data)} bytes: too short")
  n = int.from_bytes(data[:_PREFIX], "little")
  if not 2 <= n <= len(data) - _PREFIX:
    raise _damaged(
      path,
      f"header length {n} does not fit in {len(data)} bytes: truncated, or not a safetensors file",
    )
  try:
    header = json.loads(data[_PREFIX : _PREFIX + n].decode("utf-8"))
  except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    raise _damaged(path, f"header: {str(err).splitlines()[0]}") from None
  if not isinstance(header, dict):
    raise _damaged(path, "header: not a JSON object")
  expected = _PREFIX + n + _data_size(header)
  if len(data) < expected:
    raise _damaged(path, f"truncated: {len(data)} of {expected} bytes")
  meta = header.get("__metadata__")
  if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
    meta = {}
  return _PREFIX + n, meta


def _data_size(header: dict[str, Any]) -> int:
  """The bytes of arrays a safetensors header announces (0 where it cannot tell: the checksum
  then decides)."""
  ends = [
    entry["data_offsets"][1]
    for name, entry in header.items()
    if name != "__metadata__"
    and isinstance(entry, dict)
    and isinstance(entry.get("data_offsets"), list)
    and len(entry["data_offsets"]) == 2
    and isinstance(entry["data_offsets"][1], int)
  ]
  return max(ends, default=0)


def _digest_span(path: str, data: bytes, header_end: int, value: str) -> tuple[int, int]:
  """Where the digest `value` sits in the header: exactly one quoted occurrence."""
  needle = b'"' + value.encode("ascii") + b'"'
  at = data.find(needle, _PREFIX, header_end)
  if at < 0 or data.find(needle, at + 1, header_end) >= 0:
    raise _altered(path)
  return at + 1, at + 1 + len(value)


def _check_sealed(path: str, data: bytes, header_end: int, meta: dict[str, str]) -> None:
  """Refuses a version-2 file unless its whole-file digest matches."""
  stored = meta.get(DIGEST_KEY, "")
  if not _HEX64.fullmatch(stored):
    raise _altered(path)
  start, stop = _digest_span(path, data, header_end, stored)
  if file_digest(data, start, stop) != stored:
    raise _altered(path)


def _arrays(path: str, data: bytes) -> dict[str, np.ndarray]:
  from safetensors.numpy import load  # pylint: disable=g-import-not-at-top

  try:
    return load(data)
  except Exception as err:  # pylint: disable=broad-except
    # Reached only by version-1 files (a sealed file was checked byte for byte); whatever
    # safetensors or numpy say about damaged arrays, the user is told in one line.
    raise _damaged(
      path, f"arrays: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    ) from None


def read_verified(path: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
  """(metadata, arrays) of an exported model file whose checksum matches.

  Raises:
    ModelFileError: missing, unreadable, not a WaveGAN model file, another version, or altered.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as err:
    raise _damaged(path, err.strerror or str(err)) from None
  header_end, meta = _read_header(path, data)
  if meta.get("format") != FORMAT:
    raise ModelFileError(
      one_line(f"{path}: not a WaveGAN model file (format {meta.get('format')!r})")
    )
  version = meta.get("version")
  if version == str(FORMAT_VERSION):
    _check_sealed(path, data, header_end, meta)
  elif version != str(ARRAYS_ONLY_VERSION):
    raise ModelFileError(
      one_line(
        f"{path}: model format version {version}; this version reads "
        f"{ARRAYS_ONLY_VERSION} and {FORMAT_VERSION}"
      )
    )
  tensors = _arrays(path, data)
  if version == str(ARRAYS_ONLY_VERSION) and digest(tensors) != meta.get(DIGEST_KEY):
    raise _altered(path)
  return meta, tensors


def _seal(tmp: str) -> None:
  """Writes the whole-file digest over the placeholder of a just-written file, in place."""
  with open(tmp, "r+b") as f:
    data = f.read()
    header_end = _PREFIX + int.from_bytes(data[:_PREFIX], "little")
    start, stop = _digest_span(tmp, data, header_end, _PLACEHOLDER)
    f.seek(start)
    f.write(file_digest(data, start, stop).encode("ascii"))


def save_model(
  path: str,
  model: ModelConfig,
  styles: tuple[str, ...],
  sample_rate: int,
  params: Any,
  info: dict[str, Any] | None = None,
  extras: dict[str, Any] | None = None,
) -> str:
  """Writes an exported model file atomically: sealed, re-read and verified before it gets its
  final name, with ordinary file permissions.

  Args:
    path: output file (conventionally `.wgan`).
    model: the generator's config.
    styles: style names.
    sample_rate: Hz.
    params: the generator's parameters (pytree of arrays).
    info: extra JSON-serialisable facts (e.g. preset, step).
    extras: JSON-serialisable conditioning and STFT moments (see `ExportedModel`).

  Returns:
    `path`.

  Raises:
    DiskFullError: the disk filled up; nothing was left under `path`.
    ValueError: `info` or `extras` hold NaN or infinity (JSON cannot hold them).
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  tensors = flatten(params)
  metadata = {
    "format": FORMAT,
    "version": str(FORMAT_VERSION),
    "model": _json(dataclasses.asdict(model)),
    "styles": _json(list(styles)),
    "sample_rate": str(int(sample_rate)),
    "info": _json(info or {}),
    "extras": _json(extras or {}),
    DIGEST_KEY: _PLACEHOLDER,
  }
  with atomic_path(path, verify=read_verified) as tmp:
    save_file(tensors, tmp, metadata=metadata)
    _seal(tmp)
  return path


def _json(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, allow_nan=False)


def load_model(path: str) -> ExportedModel:
  """Reads and verifies an exported model file; the checksum is checked before any model is
  built.

  Raises:
    ModelFileError: the file is missing, not a safetensors file, truncated, of another format or
      version, or it does not match its checksum or its config.
  """
  if not os.path.isfile(path):
    raise ModelFileError(one_line(f"{path}: no such model file"))
  meta, tensors = read_verified(path)
  try:
    model = section_from_dict(ModelConfig, json.loads(meta["model"]))
    model.validate()
    styles = tuple(json.loads(meta["styles"]))
    sample_rate = int(meta["sample_rate"])
    info = json.loads(meta.get("info", "{}"))
    extras = json.loads(meta.get("extras", "{}"))
    _, structure = kinds.abstract_generator(model)
  except (KeyError, TypeError, ValueError, ArithmeticError) as err:
    raise ModelFileError(one_line(f"{path}: damaged metadata ({err})")) from None
  expected = flatten_abstract(structure)
  if set(expected) != set(tensors):
    missing = sorted(set(expected) - set(tensors))[:3]
    extra = sorted(set(tensors) - set(expected))[:3]
    raise ModelFileError(
      one_line(
        f"{path}: parameters do not fit the model config (missing {missing}, unexpected {extra})"
      )
    )
  for name, spec in expected.items():
    if tuple(tensors[name].shape) != tuple(spec.shape):
      raise ModelFileError(
        one_line(
          f"{path}: parameter {name} has shape {tensors[name].shape}, the model wants {spec.shape}"
        )
      )
  return ExportedModel(model, styles, sample_rate, unflatten(structure, tensors), info, extras)


def unflatten(structure: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
  """The inverse of `flatten`: arrays named like `structure`'s leaves, in its nested dicts.

  Raises:
    KeyError: a leaf of `structure` has no array in `tensors`.
  """
  flat = traverse_util.flatten_dict(structure, keep_empty_nodes=True)
  empty = traverse_util.empty_node
  return traverse_util.unflatten_dict(
    {path: leaf if leaf is empty else tensors[_key(path)] for path, leaf in flat.items()}
  )


def flatten_abstract(structure: dict[str, Any]) -> dict[str, Any]:
  """Like `flatten`, for nested dicts of shape/dtype structs."""
  return {_key(path): leaf for path, leaf in traverse_util.flatten_dict(structure).items()}
