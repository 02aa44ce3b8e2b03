"""Fingerprints of the numerics: parameter digests at init and the state after one training step.

  python benchmarks/fingerprint.py > before.json   # ... change the code ...
  python benchmarks/fingerprint.py | diff before.json -
  python benchmarks/fingerprint.py --conv direct   # every step and the run with direct convolutions

A restructuring that must not change what the toolkit computes shows no difference. The digests
hold on one machine (XLA's rounding may differ between CPUs), so compare runs on the same host.
"""

from __future__ import annotations

import hashlib
import json
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wavegan.config import apply_overrides
from wavegan.models import kinds
from wavegan.presets import preset
from wavegan.training import step as ts

INIT = {  # preset -> override sets whose initial parameters are digested
  "tiny": [
    [],
    ["model.kind=specgan"],
    ["model.num_styles=6"],
    ["model.num_styles=6", "model.g_cond=film"],
    ["model.num_styles=6", "model.d_cond=acgan"],
    ["model.aux_discs=mrstft,msd,mpd"],
    ["model.slice_len=32768"],
    ["model.slice_len=65536"],
    ["model.channels=2"],
    ["model.kind=specgan", "model.num_styles=6"],
    ["model.post_filter_len=512"],
  ],
  "demo": [[], ["model.kind=specgan"], ["model.num_styles=6"]],
  "paper": [[], ["model.kind=specgan"]],
}
STEP = [  # tiny override sets run for one step on a fixed batch
  [],
  ["model.num_styles=3"],
  ["model.num_styles=3", "model.d_cond=acgan"],
  ["model.num_styles=3", "model.g_cond=film"],
  ["model.kind=specgan", "model.num_styles=3"],
  ["model.aux_discs=mrstft,msd,mpd"],
  ["optim.loss=hinge"],
  ["optim.loss=lsgan"],
  ["optim.loss=nonsaturating"],
  ["train.batch_size=8", "compute.grad_accum=2"],
  ["model.num_styles=3", "model.style_groups=2,1", "model.num_attributes=1"],
]


def tree_digest(tree) -> str:
  h = hashlib.sha256()
  for path, leaf in sorted(
    jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda kv: str(kv[0])
  ):
    a = np.asarray(leaf)
    if a.dtype.kind == "V" or str(a.dtype).startswith("key"):
      a = np.asarray(jax.random.key_data(leaf))
    h.update(str(path).encode() + str(a.dtype).encode() + str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


def fake_batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  n, b, m = cfg.optim.n_critic, cfg.train.batch_size, cfg.model
  real = rng.uniform(-1, 1, (n, b, m.slice_len, m.channels)).astype(np.float32)
  if m.num_attributes or m.style_groups:
    cols = [rng.integers(0, g, (n, b)) for g in m.groups]
    cols += [rng.normal(size=(n, b)) for _ in range(m.num_attributes)]
    vec = np.concatenate(
      [np.eye(g)[c] for g, c in zip(m.groups, cols)]
      + [c[..., None] for c in cols[len(m.groups) :]],
      -1,
    )
    return real, vec.astype(np.float32)
  return real, rng.integers(0, max(m.num_styles, 1), (n, b)).astype(np.int32)


def run_fingerprint(extra: list[str]) -> dict[str, str]:
  """A tiny run through the command line: train, then the audio it generates and its evaluation."""
  import contextlib
  import io
  import os
  import tempfile

  from wavegan import Synthesizer
  from wavegan.cli import main as cli

  with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
    run = os.path.join(tmp, "run")
    assert (
      cli(
        ["train", "--workdir", run, "--preset", "tiny", "--set", "train.steps=6", "--no-progress"]
        + [a for x in extra for a in ("--set", x)]
      )
      == 0
    )
    audio = Synthesizer.load(run).generate(6, seed=0)
    assert cli(["evaluate", "--workdir", run, "--n", "64", "--out", os.path.join(tmp, "eval")]) == 0
    with open(os.path.join(tmp, "eval", "report.json")) as f:
      report = json.load(f)
  report.pop("run", None)
  return {
    "audio": hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest()[:16],
    "report": hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16],
  }


def main() -> None:
  import argparse

  from wavegan.models.layers import CONV_ALGORITHMS, conv_algorithm

  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--conv", choices=CONV_ALGORITHMS, help="compute.conv for every step and run")
  args = ap.parse_args()
  extra = [f"compute.conv={args.conv}"] if args.conv else []
  with conv_algorithm(args.conv or "auto"):  # for generation outside the training step
    fingerprint(extra)


def fingerprint(common_sets: list[str]) -> None:
  out = {"init": {}, "step": {}}
  for name, sets in INIT.items():
    for extra in sets:
      cfg = apply_overrides(preset(name), extra)
      _, state = ts.build(cfg)
      out["init"][f"{name} {' '.join(extra)}".strip()] = {
        "g": tree_digest(state.g_params),
        "d": tree_digest(state.d_params),
      }
      print(name, extra, file=sys.stderr)
  for extra in STEP:
    cfg = apply_overrides(preset("tiny"), [*extra, *common_sets])
    models, state = ts.build(cfg)
    mesh = ts.data_mesh()
    state = jax.device_put(state, NamedSharding(mesh, P()))
    bins = cfg.model.n_fft // 2
    moments = (
      np.linspace(-3, 1, bins, dtype=np.float32),
      np.linspace(0.5, 2, bins, dtype=np.float32),
    )
    step = ts.make_train_step(
      models, cfg, mesh, moments if kinds.kind_of(cfg.model).statistics else None
    )
    real, styles = fake_batch(cfg)
    state, metrics = step(state, real, styles)
    out["step"][" ".join(extra) or "tiny"] = {
      "state": tree_digest(state),
      "metrics": {k: float(v) for k, v in sorted(metrics.items())},
    }
    print(extra, file=sys.stderr)
  out["run"] = run_fingerprint(common_sets)
  json.dump(out, sys.stdout, indent=1, sort_keys=True)
  print()


if __name__ == "__main__":
  main()
