"""The PyTorch reference's side of `bench_layers.py`: per conv layer of G and D, the time of the
forward pass, the input gradient, the weight gradient and (D only) the gradient penalty's double
backward, and the f32 matmul ceiling. Run with the reference's Python (`.venv-torchref`); prints
JSON lines. Not meant to be run alone: `bench_layers.py --vs-torch` runs it.

    .venv-torchref/bin/python benchmarks/torch_layers.py --ref DIR [--batch 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import sys

import common  # beside this script; stdlib only, like this interpreter needs


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--ref", required=True, help="the reference's folder (wavegan_torch.py)")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--matmul", type=int, default=2048)
  args = p.parse_args()
  sys.path.insert(0, args.ref)
  import torch
  import wavegan_torch as W

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  n = args.matmul
  a, b = torch.randn(n, n), torch.randn(n, n)
  dt = common.median_time(lambda: a @ b, args.reps)
  print(json.dumps({"record": "matmul", "n": n, "s": dt, "gflop_s": 2 * n**3 / dt / 1e9}))
  cfg = W.WaveGANConfig()
  nets = (
    ("G", W.WaveGANGenerator(cfg), W.g_plan(cfg)),
    ("D", W.WaveGANDiscriminator(cfg), W.d_plan(cfg)),
  )
  for net, model, plan in nets:
    for i, (conv, (ci, co, _, lin, lout)) in enumerate(zip(model.convs, plan)):
      x = torch.randn(args.batch, ci, lin, requires_grad=True)
      v = torch.randn(args.batch, co, lout)
      for direction, s in layer_times(torch, conv, x, v, net == "D", args.reps).items():
        rec = {"record": "layer", "net": net, "layer": i, "c_in": ci, "c_out": co}
        print(json.dumps({**rec, "l_in": lin, "l_out": lout, "direction": direction, "s": s}))
        sys.stdout.flush()


def layer_times(torch, conv, x, v, penalty: bool, reps: int) -> dict[str, float]:
  """Seconds of each direction of one layer; the backward passes reuse one recorded graph, so
  each is timed alone."""
  w = conv.weight
  y = conv(x)

  def forward():
    with torch.no_grad():
      conv(x)

  def input_grad():
    torch.autograd.grad(y, x, v, retain_graph=True)

  def weight_grad():
    torch.autograd.grad(y, w, v, retain_graph=True)

  def double_backward():
    (gx,) = torch.autograd.grad(y, x, v, create_graph=True, retain_graph=True)
    torch.autograd.grad((gx * gx).sum(), w)

  fns = {"forward": forward, "input_grad": input_grad, "weight_grad": weight_grad}
  if penalty:
    fns["penalty"] = double_backward
  return {direction: common.median_time(fn, reps) for direction, fn in fns.items()}


if __name__ == "__main__":
  main()
