"""What a run is conditioned on: label fields and continuous attributes, and their style vectors.

A run with one label field (the folder, or one manifest column) and no attributes is described by
its style names alone, as it always was. With several fields (e.g. instrument and technique) or
attributes (e.g. pitch), the models read a style vector [cond_dim]: one block of weights per
field (a one-hot for one value, or a mix), then each attribute standardised with the corpus'
mean and std, so 0 is the corpus average. `Conditioning` keeps the vocabularies and the attribute
moments with the run (JSON in the checkpoint and in exported models) and turns what a user asks
for, e.g. `{"instrument": "snare", "technique": {"rim": 0.5, "center": 0.5}, "pitch": 220}`, into
that vector.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from wavegan.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Attribute:
  """A continuous attribute: standardised value = (f(x) - mean) / std, f = log2 when `log`.

  Attributes computed from audio in Hz (pitch, brightness) are modelled on a log2 scale, where
  equal steps are equal musical intervals; manifest attributes are taken as they are.
  """

  name: str
  mean: float
  std: float
  log: bool = False

  def standardize(self, values: np.ndarray) -> np.ndarray:
    """Raw values [N] -> standardised float32 [N]; NaN stays NaN."""
    v = np.asarray(values, np.float64)
    if self.log:
      with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(v > 0, np.log2(np.where(v > 0, v, 1.0)), np.nan)
    return ((v - self.mean) / self.std).astype(np.float32)

  def raw(self, standardized: np.ndarray) -> np.ndarray:
    """Inverse of `standardize`."""
    v = np.asarray(standardized, np.float64) * self.std + self.mean
    return (np.exp2(v) if self.log else v).astype(np.float32)

  @classmethod
  def fit(cls, name: str, values: np.ndarray, log: bool) -> Attribute:
    """Moments of the finite values (log2 first when `log`)."""
    v = np.asarray(values, np.float64)
    if log:
      v = np.log2(v[v > 0])
    v = v[np.isfinite(v)]
    if v.size == 0:
      raise ConfigError(f"attribute {name!r}: no clip has a value")
    return cls(name, float(v.mean()), float(max(v.std(), 1e-6)), log)


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """Label fields (name, vocabulary) in order, then attributes."""

  fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
  attributes: tuple[Attribute, ...] = ()

  @property
  def groups(self) -> tuple[int, ...]:
    return tuple(len(vocab) for _, vocab in self.fields)

  @property
  def dim(self) -> int:
    return sum(self.groups) + len(self.attributes)

  @property
  def field_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.fields)

  @property
  def attribute_names(self) -> tuple[str, ...]:
    return tuple(a.name for a in self.attributes)

  @property
  def simple(self) -> bool:
    """One label field and no attributes: style ids are enough (runs from before this class)."""
    return len(self.fields) <= 1 and not self.attributes

  def to_dict(self) -> dict[str, Any]:
    return {
      "fields": [[name, list(vocab)] for name, vocab in self.fields],
      "attributes": [dataclasses.asdict(a) for a in self.attributes],
    }

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | None) -> Conditioning:
    if not d:
      return cls()
    return cls(
      tuple((name, tuple(vocab)) for name, vocab in d.get("fields", [])),
      tuple(Attribute(**a) for a in d.get("attributes", [])),
    )

  def vectors(self, ids: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Per-clip style vectors float32 [N, dim] from field ids int [N, K] and standardised
    attributes [N, A] (NaN, i.e. unknown, becomes 0: the corpus mean)."""
    ids = np.asarray(ids).reshape(len(ids), -1)
    blocks = [np.eye(n, dtype=np.float32)[ids[:, k]] for k, n in enumerate(self.groups)]
    blocks.append(np.nan_to_num(np.asarray(attributes, np.float32).reshape(len(ids), -1), nan=0.0))
    return np.concatenate(blocks, axis=1)

  def encode(self, style: Mapping[str, Any] | str | None) -> np.ndarray:
    """What a user asks for -> one style vector float32 [dim].

    `style` is a value of the first field, or a mapping whose keys are field names (value: a
    name or a {name: weight} mix), attribute names (value: a number in the attribute's own unit,
    e.g. Hz for pitch) or values of the first field (a mix). Fields left out get an equal mix of
    their values; attributes left out get the corpus mean; `{}` is no style at all.

    Raises:
      ConfigError: unknown names or non-finite numbers.
    """
    if isinstance(style, str):
      style = {style: 1.0}
    style = dict(style or {})
    if not style:
      return np.zeros(self.dim, np.float32)
    first_name, first_vocab = self.fields[0] if self.fields else ("", ())
    by_field: dict[str, Any] = {}
    loose: dict[str, float] = {}
    attrs: dict[str, float] = {}
    for key, value in style.items():
      if key in self.field_names:
        by_field[key] = value
      elif key in self.attribute_names:
        attrs[key] = style_number(key, value)
      elif key in first_vocab:
        loose[key] = style_number(key, value)
      else:
        valid = [*self.field_names, *self.attribute_names, *first_vocab]
        raise ConfigError(f"unknown style key {key!r}; valid: {', '.join(valid)}")
    if loose:
      if first_name in by_field:
        raise ConfigError(f"give {first_name!r} either by field name or by its values, not both")
      by_field[first_name] = loose
    out = []
    for name, vocab in self.fields:
      value = by_field.get(name)
      if value is None:
        out.append(np.full(len(vocab), 1.0 / len(vocab), np.float32))
        continue
      mix = {value: 1.0} if isinstance(value, str) else dict(value)
      w = np.zeros(len(vocab), np.float32)
      for entry, weight in mix.items():
        if entry not in vocab:
          raise ConfigError(f"unknown {name} {entry!r}; valid: {', '.join(vocab)}")
        w[vocab.index(entry)] += style_number(entry, weight)
      out.append(w)
    for a in self.attributes:
      v = attrs.get(a.name)
      if v is not None and a.log and v <= 0:
        raise ConfigError(f"{a.name}={v}: must be > 0")
      out.append(np.zeros(1, np.float32) if v is None else a.standardize(np.array([v])))
    return np.concatenate(out).astype(np.float32)

  def for_first_field(self, ids: np.ndarray) -> np.ndarray:
    """Style vectors [N, dim] for ids [N] of the first field, others as in `encode`'s defaults."""
    first_name, first_vocab = self.fields[0]
    table = np.stack([self.encode({first_name: v}) for v in first_vocab])  # [S, dim]
    return table[np.asarray(ids)]


def style_number(key: str, value: Any) -> float:
  """A style weight or attribute value as a finite float, or a ConfigError naming its key."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ConfigError(f"style value for {key!r} is {value!r}: must be a number") from None
  if not math.isfinite(v):
    raise ConfigError(f"style value for {key!r} is {value}: must be a finite number")
  return v
