"""Exported models: one self-contained, code-free file with the EMA generator of a run.

The file is a safetensors file (a JSON header and raw arrays: loading it runs no code, unlike a
pickle). Its metadata holds the format name and version, the model config, the style names, the
sample rate, the conditioning and STFT moments of runs that have them (JSON), and a SHA-256 digest over every array's name, dtype, shape and bytes, so a truncated
or altered file is refused with a clear error instead of producing wrong audio.

Reading needs numpy, safetensors, jax and flax only: no optimiser, checkpoint or data code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from wavegan.config import ConfigError, ModelConfig

FORMAT = "wavegan-generator"
FORMAT_VERSION = 1
SEPARATOR = "/"


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
  """A pytree path -> "ups/0/kernel"."""
  parts = []
  for p in path:
    for attr in ("key", "idx", "name"):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return SEPARATOR.join(parts)


def flatten(params: Any) -> dict[str, np.ndarray]:
  """Parameter pytree -> {"ups/0/kernel": array}."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return {_key(path): np.asarray(leaf) for path, leaf in leaves}


def digest(tensors: dict[str, np.ndarray]) -> str:
  """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
  h = hashlib.sha256()
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def generator_graph(model: ModelConfig) -> tuple[Any, Any]:
  """The generator's graph definition and parameter pytree of shapes (nothing is computed)."""
  from wavegan.models import generator_class  # pylint: disable=g-import-not-at-top

  abstract = nnx.eval_shape(lambda: generator_class(model)(model, rngs=nnx.Rngs(0)))
  graph, params = nnx.split(abstract, nnx.Param)
  return graph, nnx.to_pure_dict(params)


def save_model(path: str, model: ModelConfig, styles: tuple[str, ...], sample_rate: int,
               params: Any, info: dict[str, Any] | None = None,
               extras: dict[str, Any] | None = None) -> str:
  """Writes an exported model file atomically.

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
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  tensors = flatten(params)
  metadata = {"format": FORMAT, "version": str(FORMAT_VERSION),
              "model": json.dumps(dataclasses.asdict(model), sort_keys=True),
              "styles": json.dumps(list(styles)), "sample_rate": str(int(sample_rate)),
              "info": json.dumps(info or {}, sort_keys=True),
              "extras": json.dumps(extras or {}, sort_keys=True), "sha256": digest(tensors)}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  save_file(tensors, tmp, metadata=metadata)
  os.replace(tmp, path)
  return path


def load_model(path: str) -> ExportedModel:
  """Reads and verifies an exported model file.

  Raises:
    ModelFileError: the file is missing, not a safetensors file, truncated, of another format or
      version, or its arrays do not match its digest or its config.
  """
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise ModelFileError(f"{path}: no such model file")
  try:
    with safe_open(path, framework="numpy") as f:
      meta = f.metadata() or {}
    tensors = load_file(path)
  except (SafetensorError, OSError, ValueError) as err:
    raise ModelFileError(f"{path}: not a readable model file ({str(err).splitlines()[0]})") from None
  if meta.get("format") != FORMAT:
    raise ModelFileError(f"{path}: not a WaveGAN model file (format {meta.get('format')!r})")
  if meta.get("version") != str(FORMAT_VERSION):
    raise ModelFileError(f"{path}: model format version {meta.get('version')}; this version "
                         f"reads {FORMAT_VERSION}")
  if digest(tensors) != meta.get("sha256"):
    raise ModelFileError(f"{path}: the parameters do not match the file's checksum "
                         "(the file was altered or damaged)")
  try:
    model = ModelConfig(**json.loads(meta["model"]))
    styles = tuple(json.loads(meta["styles"]))
    sample_rate = int(meta["sample_rate"])
    info = json.loads(meta.get("info", "{}"))
    extras = json.loads(meta.get("extras", "{}"))
  except (KeyError, TypeError, ValueError) as err:
    raise ModelFileError(f"{path}: damaged metadata ({err})") from None
  _, structure = generator_graph(model)
  expected = flatten_abstract(structure)
  if set(expected) != set(tensors):
    missing = sorted(set(expected) - set(tensors))[:3]
    extra = sorted(set(tensors) - set(expected))[:3]
    raise ModelFileError(f"{path}: parameters do not fit the model config (missing {missing}, "
                         f"unexpected {extra})")
  for name, spec in expected.items():
    if tuple(tensors[name].shape) != tuple(spec.shape):
      raise ModelFileError(f"{path}: parameter {name} has shape {tensors[name].shape}, the model "
                           f"wants {spec.shape}")
  return ExportedModel(model, styles, sample_rate, unflatten(structure, tensors), info, extras)


def unflatten(structure: Any, tensors: dict[str, np.ndarray]) -> Any:
  """The inverse of `flatten`: arrays named like `structure`'s leaves, in its tree.

  Raises:
    KeyError: a leaf of `structure` has no array in `tensors`.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(structure)
  return jax.tree_util.tree_unflatten(treedef, [tensors[_key(path)] for path, _ in leaves])


def flatten_abstract(structure: Any) -> dict[str, Any]:
  """Like `flatten`, for a pytree of shape/dtype structs."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(structure)
  return {_key(path): leaf for path, leaf in leaves}
