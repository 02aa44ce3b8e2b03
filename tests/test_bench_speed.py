"""The speed benchmarks' recipe list and per-layer table: valid configs, and figures computed
from the records they are given."""

import os
import sys

import pytest

from wavegan.config import apply_overrides
from wavegan.models import kinds
from wavegan.presets import preset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import bench_layers  # noqa: E402
import bench_train  # noqa: E402


@pytest.mark.parametrize("name", list(bench_train.RECIPES))
def test_every_timed_recipe_is_a_valid_config(name):
  cfg = apply_overrides(preset("paper"), bench_train.RECIPES[name])
  kinds.check(cfg.validate())


def test_the_first_recipe_is_the_papers_which_the_reference_runs():
  first = next(iter(bench_train.RECIPES.values()))
  cfg = apply_overrides(preset("paper"), first)
  assert (cfg.optim.loss, cfg.optim.n_critic) == ("wgan-gp", 5)


def _layer(direction, conv, s):
  shape = {"net": "D", "layer": 2, "c_in": 128, "c_out": 256, "l_in": 1024, "l_out": 256}
  return {"record": "layer", **shape, "direction": direction, "conv": conv, "s": s}


def test_layer_table_gives_each_convolution_against_the_reference():
  ours = [
    {"record": "matmul", "n": 2048, "s": 0.1, "gflop_s": 100.0},
    _layer("forward", "direct", 0.2),
    _layer("forward", "winograd", 0.1),
  ]
  ref = [{"record": "matmul", "gflop_s": 90.0}, {**_layer("forward", "torch", 0.3)}]
  text = bench_layers.table(64, ours, ref)
  # 2 x 64 * 256 * 128 * 256 * 25 multiply-adds = 26.8 GFLOP: 134 GFLOP/s in 0.2 s, 268 in 0.1 s
  row = next(line for line in text.splitlines() if line.startswith("| D2"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  want = ["200.0", "134 (134 %)", "100.0", "268 (268 %)", "300.0", "89", "1.50x", "3.00x"]
  assert cells[3:] == want
  assert "- all layers, forward: JAX direct 200 ms, JAX winograd 100 ms, PyTorch 300 ms" in text
