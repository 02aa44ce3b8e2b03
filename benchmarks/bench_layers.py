"""Where the training step's time goes: each conv layer of G and D, each direction, JAX against
the PyTorch reference in the same run.

    python benchmarks/bench_layers.py [--batch 64] [--reps 5] [--conv direct,winograd]
                                      [--vs-torch] [--out FILE.md]

For the paper's model (d=64, 16384 samples) at `--batch`: every upsampling layer of G and
downsampling layer of D, timed alone (jitted, median of `--reps` after a warm-up) in four
directions: the forward pass, the input gradient, the weight gradient and, for D, the gradient
penalty's double backward (the weight gradient of |input gradient|^2, what WGAN-GP adds per
layer). Each is also given as GFLOP/s of its analytic work (2 x multiply-adds per pass; the
double backward counts two passes) against the f32 matmul ceiling (a 2048^3 matmul) measured in
the same run by each library. JAX runs each layer with each of `--conv`'s convolutions (direct
and Winograd, see `wavegan.models.layers`), so the table holds before and after. With --vs-torch the reference (`.venv-torchref`, see
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
CONVS = ("direct", "winograd")  # the layers' convolutions (`wavegan.models.layers.conv_algorithm`)
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


def jax_records(batch: int, reps: int, convs: tuple[str, ...] = CONVS) -> list[dict]:
  """The JAX side: the matmul ceiling, then every layer and direction, with each of `convs`."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from wavegan.config import ModelConfig
  from wavegan.models.layers import Downsample1d, Upsample1d, conv_algorithm

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
      for conv in convs:
        with conv_algorithm(conv):  # read when traced: a new function per conv, traced here
          s = time_jitted(lambda *a, fn=fn: fn(*a), (params, x, v), reps)
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
            "conv": conv,
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
  """The per-layer table as Markdown: per JAX convolution its time and GFLOP/s, then the
  reference's, then each JAX convolution's speed-up over the reference (or, without it, the
  speed-up of the last convolution over the first)."""
  ceiling = next(r["gflop_s"] for r in ours if r["record"] == "matmul")
  ref_ceiling = next((r["gflop_s"] for r in ref or [] if r["record"] == "matmul"), None)
  key = lambda r: (r["net"], r["layer"], r["direction"])
  theirs = {key(r): r for r in ref or [] if r["record"] == "layer"}
  layers = [r for r in ours if r["record"] == "layer"]
  convs = list(dict.fromkeys(r["conv"] for r in layers))
  mine = {(*key(r), r["conv"]): r for r in layers}
  head = f"f32 matmul ceiling (2048^3): JAX {ceiling:.0f} GFLOP/s"
  if ref_ceiling:
    head += f", PyTorch {ref_ceiling:.0f} GFLOP/s"
  cols = ["layer", "shape (C_in -> C_out, L_in -> L_out)", "direction"]
  for c in convs:
    cols += [f"JAX {c} ms", f"JAX {c} GFLOP/s (% of ceiling)"]
  if ref:
    cols += ["PyTorch ms", "PyTorch GFLOP/s", *(f"{c} speed-up" for c in convs)]
  elif len(convs) > 1:
    cols += [f"{convs[-1]} / {convs[0]}"]
  lines = [
    f"{common.cpu_model()}; ISA: {isa_flags()}",
    "",
    f"batch {batch}; {head}",
    "",
    "| " + " | ".join(cols) + " |",
    "|" + " --- |" * len(cols),
  ]
  totals: dict[tuple[str, str], float] = {}
  for k in dict.fromkeys(key(r) for r in layers):
    first = mine[(*k, convs[0])]
    work = gflop(batch, first)
    cells = [
      f"{first['net']}{first['layer']}",
      f"{first['c_in']} -> {first['c_out']}, {first['l_in']} -> {first['l_out']}",
      first["direction"],
    ]
    for c in convs:
      s = mine[(*k, c)]["s"]
      totals[(first["direction"], c)] = totals.get((first["direction"], c), 0.0) + s
      cells += [f"{s * 1e3:.1f}", f"{work / s:.0f} ({100 * work / s / ceiling:.0f} %)"]
    t = theirs.get(k)
    if ref:
      if t:
        totals[(first["direction"], "torch")] = (
          totals.get((first["direction"], "torch"), 0) + t["s"]
        )
      cells += [f"{t['s'] * 1e3:.1f}", f"{work / t['s']:.0f}"] if t else ["-", "-"]
      cells += [f"{t['s'] / mine[(*k, c)]['s']:.2f}x" if t else "-" for c in convs]
    elif len(convs) > 1:
      cells += [f"{first['s'] / mine[(*k, convs[-1])]['s']:.2f}x"]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  for direction in dict.fromkeys(r["direction"] for r in layers):
    parts = [f"JAX {c} {totals[(direction, c)] * 1e3:.0f} ms" for c in convs]
    if ref:
      torch_s = totals.get((direction, "torch"), float("nan"))
      parts.append(f"PyTorch {torch_s * 1e3:.0f} ms")
      parts += [f"{c} {torch_s / totals[(direction, c)]:.2f}x" for c in convs]
    lines.append(f"- all layers, {direction}: " + ", ".join(parts))
  return "\n".join(lines) + "\n"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--vs-torch", action="store_true", help="also time the PyTorch reference")
  ap.add_argument("--torch-python", default=str(common.DEFAULT_TORCH_PYTHON))
  ap.add_argument("--out", help="also write the table to this Markdown file")
  ap.add_argument(
    "--conv", default=",".join(CONVS), help=f"JAX convolutions to time, of {', '.join(CONVS)}"
  )
  args = ap.parse_args()
  convs = tuple(args.conv.split(","))
  if not convs or any(c not in CONVS for c in convs):
    ap.error(f"--conv {args.conv}: a comma-separated list of {', '.join(CONVS)}")
  ours = jax_records(args.batch, args.reps, convs)
  ref = torch_records(args.batch, args.reps, args.torch_python) if args.vs_torch else None
  text = table(args.batch, ours, ref)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
