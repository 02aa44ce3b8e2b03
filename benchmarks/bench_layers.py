"""Where the training step's time goes: each conv layer of G and D, each direction, JAX against
the PyTorch reference in the same run.

    python benchmarks/bench_layers.py [--batch 64] [--reps 5] [--vs-torch] [--out FILE.md]

For the paper's model (d=64, 16384 samples) at `--batch`: every upsampling layer of G and
downsampling layer of D, timed alone (jitted, median of `--reps` after a warm-up) in four
directions: the forward pass, the input gradient, the weight gradient and, for D, the gradient
penalty's double backward (the weight gradient of |input gradient|^2, what WGAN-GP adds per
layer). Each is also given as GFLOP/s of its analytic work (2 x multiply-adds per pass; the
double backward counts two passes) against the f32 matmul ceiling (a 2048^3 matmul) measured in
the same run by each library. With --vs-torch the reference (`.venv-torchref`, see
`common.DEFAULT_TORCH_PYTHON`) runs the same shapes with its own layers (`torch_layers.py`), and
the table gets its times and the ratio. The host's CPU and ISA flags head the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

DIRECTIONS = ("forward", "input_grad", "weight_grad", "penalty")
PASSES = {"forward": 1, "input_grad": 1, "weight_grad": 1, "penalty": 2}


def isa_flags() -> str:
  """The CPU's vector ISA flags (avx2, avx512*, amx*, fma) from /proc/cpuinfo."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = line.split(":", 1)[1].split()
          keep = [x for x in flags if x.startswith(("avx", "amx", "fma"))]
          return " ".join(sorted(set(keep)))
  except OSError:
    pass
  return "unknown"


def time_jitted(fn, args: tuple, reps: int) -> float:
  """Median seconds of jit(fn)(*args), compiled and warmed up first."""
  import jax

  f = jax.jit(fn)
  return common.median_time(lambda: jax.block_until_ready(f(*args)), reps)


def layer_shapes(cfg) -> list[tuple[str, int, int, int, int, int]]:
  """(net, index, c_in, c_out, length in, length out) of every conv layer of G, then D."""
  from wavegan.models.waveform import base_len, layer_plan

  _, widths, strides = layer_plan(cfg)
  out = []
  n = base_len(cfg)
  for i, (ci, co, s) in enumerate(zip(widths, [*widths[1:], cfg.channels], strides)):
    out.append(("G", i, ci, co, n, n * s))
    n *= s
  chans = [cfg.channels, *widths[::-1]]
  n = cfg.slice_len
  for i, (ci, co, s) in enumerate(zip(chans[:-1], chans[1:], strides)):
    out.append(("D", i, ci, co, n, n // s))
    n //= s
  return out


def jax_records(batch: int, reps: int) -> list[dict]:
  """The JAX side: the matmul ceiling, then every layer and direction."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from wavegan.config import ModelConfig
  from wavegan.models.layers import Downsample1d, Upsample1d

  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  mm = jax.jit(lambda a: a @ a)
  s = common.median_time(lambda: mm(a).block_until_ready(), reps)
  records = [{"record": "matmul", "n": n, "s": s, "gflop_s": 2 * n**3 / s / 1e9}]
  cfg = ModelConfig()
  for net, i, ci, co, lin, lout in layer_shapes(cfg):
    layer_cls = Upsample1d if net == "G" else Downsample1d
    stride = lout // lin if net == "G" else lin // lout
    layer = layer_cls(ci, co, cfg.kernel_len, stride, rngs=nnx.Rngs(0))
    graph, params = nnx.split(layer)
    apply = lambda p, x, graph=graph: nnx.merge(graph, p)(x)
    x = jax.random.normal(jax.random.key(1), (batch, lin, ci))
    v = jax.random.normal(jax.random.key(2), (batch, lout, co))

    def input_grad(p, x, v, apply=apply):
      return jax.vjp(lambda x: apply(p, x), x)[1](v)[0]

    def weight_grad(p, x, v, apply=apply):
      return jax.vjp(lambda p: apply(p, x), p)[1](v)[0]

    def penalty(p, x, v, input_grad=input_grad):
      return jax.grad(lambda p: jnp.sum(input_grad(p, x, v) ** 2))(p)

    fns = {
      "forward": lambda p, x, v, apply=apply: apply(p, x),
      "input_grad": input_grad,
      "weight_grad": weight_grad,
      **({"penalty": penalty} if net == "D" else {}),
    }
    for direction, fn in fns.items():
      s = time_jitted(fn, (params, x, v), reps)
      records.append(
        {
          "record": "layer",
          "net": net,
          "layer": i,
          "c_in": ci,
          "c_out": co,
          "l_in": lin,
          "l_out": lout,
          "direction": direction,
          "s": s,
        }
      )
      print(json.dumps(records[-1]), flush=True)
  return records


def torch_records(batch: int, reps: int, python: str) -> list[dict]:
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_layers.py")
  ref = str(common.DEFAULT_TORCH_REF)
  out = subprocess.run(
    [python, script, "--ref", ref, "--batch", str(batch), "--reps", str(reps)],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def gflop(batch: int, rec: dict, kernel_len: int = 25) -> float:
  """Analytic GFLOP of a layer in one direction: 2 x multiply-adds per pass, counted as the
  reference counts them, at the shorter of the two lengths (a transposed conv's input, a strided
  conv's output)."""
  macs = batch * min(rec["l_in"], rec["l_out"]) * rec["c_in"] * rec["c_out"] * kernel_len
  return 2 * macs * PASSES[rec["direction"]] / 1e9


def table(batch: int, ours: list[dict], ref: list[dict] | None) -> str:
  """The per-layer table as Markdown."""
  ceiling = next(r["gflop_s"] for r in ours if r["record"] == "matmul")
  ref_ceiling = next((r["gflop_s"] for r in ref or [] if r["record"] == "matmul"), None)
  key = lambda r: (r["net"], r["layer"], r["direction"])
  theirs = {key(r): r for r in ref or [] if r["record"] == "layer"}
  head = f"f32 matmul ceiling (2048^3): JAX {ceiling:.0f} GFLOP/s"
  if ref_ceiling:
    head += f", PyTorch {ref_ceiling:.0f} GFLOP/s"
  lines = [
    f"{common.cpu_model()}; ISA: {isa_flags()}",
    "",
    f"batch {batch}; {head}",
    "",
    "| layer | shape (C_in -> C_out, L_in -> L_out) | direction | JAX ms | JAX GFLOP/s (% of ceiling)"
    + (" | PyTorch ms | PyTorch GFLOP/s | JAX speed-up |" if ref else " |"),
    "| --- | --- | --- | --- | ---" + (" | --- | --- | --- |" if ref else " |"),
  ]
  for r in ours:
    if r["record"] != "layer":
      continue
    work = gflop(batch, r)
    rate = work / r["s"]
    row = (
      f"| {r['net']}{r['layer']} | {r['c_in']} -> {r['c_out']}, {r['l_in']} -> {r['l_out']} | "
      f"{r['direction']} | {r['s'] * 1e3:.1f} | {rate:.0f} ({100 * rate / ceiling:.0f} %) |"
    )
    t = theirs.get(key(r))
    if ref:
      row += (
        f" {t['s'] * 1e3:.1f} | {work / t['s']:.0f} | {t['s'] / r['s']:.2f}x |"
        if t
        else " - | - | - |"
      )
    lines.append(row)
  totals = {}
  for r in ours:
    if r["record"] == "layer":
      t = theirs.get(key(r))
      totals.setdefault(r["direction"], [0.0, 0.0])
      totals[r["direction"]][0] += r["s"]
      totals[r["direction"]][1] += t["s"] if t else float("nan")
  lines.append("")
  for direction, (a, b) in totals.items():
    lines.append(
      f"- all layers, {direction}: JAX {a * 1e3:.0f} ms"
      + (f", PyTorch {b * 1e3:.0f} ms ({b / a:.2f}x)" if ref else "")
    )
  return "\n".join(lines) + "\n"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--vs-torch", action="store_true", help="also time the PyTorch reference")
  ap.add_argument("--torch-python", default=str(common.DEFAULT_TORCH_PYTHON))
  ap.add_argument("--out", help="also write the table to this Markdown file")
  args = ap.parse_args()
  ours = jax_records(args.batch, args.reps)
  ref = torch_records(args.batch, args.reps, args.torch_python) if args.vs_torch else None
  text = table(args.batch, ours, ref)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
