"""The recipe comparison's and the model zoo's variants are valid configs, on the demo's former
recipe."""

import dataclasses
import os
import sys

import pytest

from wavegan.config import OptimConfig, apply_overrides
from wavegan.models import kinds
from wavegan.presets import preset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import bench_recipes  # noqa: E402


@pytest.mark.parametrize("name", list(bench_recipes.VARIANTS))
def test_every_variant_is_a_valid_config(name):
  cfg = apply_overrides(preset("demo"), [*bench_recipes.BASE, *bench_recipes.VARIANTS[name]])
  kinds.check(cfg.validate())


def test_the_base_is_the_paper_recipe_at_the_demo_ema():
  cfg = apply_overrides(preset("demo"), bench_recipes.BASE)
  assert cfg.optim == OptimConfig(ema_decay=preset("demo").optim.ema_decay)
  assert dataclasses.replace(cfg, optim=preset("demo").optim) == preset("demo")


def test_variant_names_make_distinct_run_folders():
  slugs = [bench_recipes.slug(n) for n in bench_recipes.VARIANTS]
  assert len(set(slugs)) == len(slugs)


def test_the_model_zoo_variants_are_valid_on_the_same_base():
  import bench_models  # noqa: PLC0415 (beside bench_recipes on the path)

  for sets in bench_models.VARIANTS.values():
    cfg = apply_overrides(preset("demo"), [*bench_recipes.BASE, *sets])
    kinds.check(cfg.validate())


def test_the_demo_preset_is_the_spectrogram_variant():
  """The README's demo figures are that variant's row: the same config but for the run length."""
  name = "NS + R1, n_critic 1 + TTUR, spectrogram per style"
  cfg = apply_overrides(preset("demo"), [*bench_recipes.BASE, *bench_recipes.VARIANTS[name]])
  assert cfg.validate() == preset("demo").validate()
  assert preset("large").optim == dataclasses.replace(preset("demo").optim, ema_decay=0.999)


def test_the_demo_specgan_preset_is_the_specgan_variant():
  """`make demo` trains the spectral kinds' winner: its row's config but for the run length."""
  name = "NS + R1, n_critic 1 + TTUR, specgan"
  cfg = apply_overrides(preset("demo"), [*bench_recipes.BASE, *bench_recipes.VARIANTS[name]])
  ours = preset("demo-specgan")
  assert dataclasses.replace(cfg, train=ours.train).validate() == ours.validate()
  assert ours.train.steps < cfg.train.steps  # its step costs more: 16 CPU minutes either way
