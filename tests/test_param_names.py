"""Parameter names in model files and the classifier cache stay what they were (export.flatten)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from wavegan.evaluation.classifier import ClassifierConfig, StyleNet
from wavegan.models import kinds
from wavegan.presets import preset
from wavegan.synthesis import export


def _old_key(path) -> str:
  """The names files were written with: jax tree paths joined by "/" (reference)."""
  parts = []
  for p in path:
    for attr in ("key", "idx", "name"):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return "/".join(parts)


def _old_flatten(params) -> dict[str, np.ndarray]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return {_old_key(path): np.asarray(leaf) for path, leaf in leaves}


def _generator_params(**model_fields):
  model = dataclasses.replace(preset("tiny").model, **model_fields)
  _, structure = kinds.abstract_generator(model)
  rng = np.random.default_rng(0)
  return structure, jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), structure)


def _classifier_params():
  model = StyleNet(ClassifierConfig(), 3, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), params), params


@pytest.mark.parametrize(
  "make",
  [
    lambda: _generator_params(),
    lambda: _generator_params(num_styles=4),
    lambda: _generator_params(kind="specgan"),
    _classifier_params,
  ],
  ids=["wavegan", "conditional", "specgan", "classifier"],
)
def test_flatten_names_and_round_trip_are_unchanged(make):
  structure, params = make()
  new, old = export.flatten(params), _old_flatten(params)
  assert sorted(new) == sorted(old) and any("/0/" in k for k in new)
  for name in old:
    np.testing.assert_array_equal(new[name], old[name])
  assert export.flatten_abstract(structure).keys() == old.keys()
  back = export.unflatten(structure, new)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(KeyError):
    export.unflatten(structure, {k: v for k, v in new.items() if k != sorted(new)[0]})
