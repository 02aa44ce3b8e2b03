"""SpecGAN's strided layers: the project's stride-1 convolutions vs XLA's own strided convolutions.

    python benchmarks/bench_specgan.py --dim 16 --batch 16
    python benchmarks/bench_specgan.py --dim 16 --batch 16 --reps 9 --wait-quiet 5
    python benchmarks/bench_specgan.py --paper          # d=64, batch 64, forward passes only

`wavegan.models.specgan.Upsample2d` computes its 5 x 5 stride-2 transposed convolution as one stride-1
convolution and a depth-to-space reshape, and `Downsample2d` its stride-2 convolution as a
space-to-depth reshape and a stride-1 convolution, both through `specgan.conv2d`'s own VJP. This
benchmark times them against the same models whose strided layers call XLA directly
(`lax.conv_transpose` / strided `lax.conv_general_dilated`, on the same parameters):

  G forward        SpecGenerator(z), z ~ U[-1, 1]^100
  D forward        SpecDiscriminator(x) on 128 x 128 images
  D WGAN-GP grad   d/dD of the critic loss with the gradient penalty (G's fake batch included)
  G grad           d/dG of the generator loss through the critic
  N critic steps   --critic-steps WGAN-GP critic SGD steps in a `lax.scan`, as the trainer runs them

Everything is jitted and compiled before timing. The two variants are timed alternately, one call
each per round, and each row reports the best of --reps rounds (the machine is shared: the minimum
is the least disturbed run). XLA/ours > 1 means the project's layers are faster. Below the table:
the largest relative difference between the two variants' results (they compute the same
function) and the median CPU share other processes used while timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MATCH_TOL = 1e-3  # max relative difference between the variants' results before flagging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dim", type=int, default=16, help="model width d")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--reps", type=int, default=5, help="timed rounds; each row is the best of them")
  p.add_argument("--critic-steps", type=int, default=5, help="critic steps in the scanned row")
  p.add_argument("--forward-only", action="store_true", help="skip the gradient rows")
  p.add_argument(
    "--paper", action="store_true", help="paper size: --dim 64 --batch 64 --forward-only"
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--wait-quiet",
    type=float,
    default=0.0,
    metavar="S",
    help="before each timed call wait up to S s for a 0.5 s window in which other "
    "processes use < 5%% of the CPUs (for shared machines)",
  )
  args = p.parse_args(argv)
  if args.paper:
    args.dim, args.batch, args.forward_only = 64, 64, True
  if args.reps < 1 or args.batch < 1 or args.dim < 1 or args.critic_steps < 1:
    p.error("need --reps, --batch, --dim and --critic-steps >= 1")
  return args


# ------------------------------------------------------------------------------------------------
# the XLA variant
# ------------------------------------------------------------------------------------------------


def xla_layers() -> tuple[type, type]:
  """(XlaUpsample2d, XlaDownsample2d): wrappers computing a layer with XLA's strided convs."""
  import jax
  from flax import nnx

  class XlaUpsample2d(nnx.Module):
    """`Upsample2d`'s parameters, computed by `lax.conv_transpose` (an lhs-dilated conv)."""

    def __init__(self, layer: nnx.Module):
      self.stride, self.kernel, self.bias = layer.stride, layer.kernel, layer.bias

    def __call__(self, x: jax.Array) -> jax.Array:
      # kernel [K, K, C_in, C_out] read as the forward conv's HWOI: TF's conv2d_transpose.
      y = jax.lax.conv_transpose(
        x,
        self.kernel[...].astype(x.dtype),
        (self.stride,) * 2,
        "SAME",
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
        transpose_kernel=True,
      )
      return y + self.bias[...].astype(x.dtype)

  class XlaDownsample2d(nnx.Module):
    """`Downsample2d`'s parameters, computed by a strided `lax.conv_general_dilated`."""

    def __init__(self, layer: nnx.Module):
      self.stride, self.kernel, self.bias = layer.stride, layer.kernel, layer.bias

    def __call__(self, x: jax.Array) -> jax.Array:
      y = jax.lax.conv_general_dilated(
        x,
        self.kernel[...].astype(x.dtype),
        (self.stride,) * 2,
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
      return y + self.bias[...].astype(x.dtype)

  return XlaUpsample2d, XlaDownsample2d


def xla_variant(model: Any) -> Any:
  """A copy of a SpecGenerator / SpecDiscriminator whose strided layers call XLA's convs.

  The rest of the model is the project's own code, and the parameters are the same values.
  """
  from flax import nnx

  up, down = xla_layers()
  clone = nnx.clone(model)
  for name, wrapper in (("ups", up), ("downs", down)):
    layers = getattr(clone, name, None)
    if layers is not None:
      for i in range(len(layers)):
        layers[i] = wrapper(layers[i])
  return clone


# ------------------------------------------------------------------------------------------------
# the measured functions
# ------------------------------------------------------------------------------------------------


def measured_fns(g: Any, d: Any, args: argparse.Namespace) -> dict[str, tuple[Callable, tuple]]:
  """{row name: (jitted function, its arguments)} for one variant's generator and critic."""
  import jax
  from flax import nnx

  from wavegan.config import OptimConfig
  from wavegan.models import specgan
  from wavegan.training import losses

  gp_weight = OptimConfig().resolved().gp_weight
  g_def, g_state = nnx.split(g)
  d_def, d_state = nnx.split(d)
  frames, bins = specgan.image_shape(g.cfg)
  k_z, k_x, k_gp = jax.random.split(jax.random.key(args.seed), 3)
  z = jax.random.uniform(k_z, (args.batch, g.cfg.latent_dim), minval=-1.0, maxval=1.0)
  real = jax.random.uniform(
    k_x, (args.batch, frames, bins, g.cfg.channels), minval=-1.0, maxval=1.0
  )

  def g_fwd(gs, z):
    return nnx.merge(g_def, gs)(z)

  def d_fwd(ds, x):
    return nnx.merge(d_def, ds)(x, None)

  def d_loss(ds, gs, key):
    critic = lambda x: nnx.merge(d_def, ds)(x, None)  # noqa: E731
    fake = jax.lax.stop_gradient(g_fwd(gs, z))
    return losses.wgan_d(critic(real), critic(fake)) + gp_weight * losses.gradient_penalty(
      critic, real, fake, key
    )

  def g_loss(gs, ds):
    return losses.wgan_g(d_fwd(ds, g_fwd(gs, z)))

  def critic_steps(ds, gs):
    def body(ds, key):
      grads = jax.grad(d_loss)(ds, gs, key)
      return jax.tree.map(lambda p, q: p - 1e-4 * q, ds, grads), None

    return jax.lax.scan(body, ds, jax.random.split(k_gp, args.critic_steps))[0]

  fns = {"G forward": (g_fwd, (g_state, z)), "D forward": (d_fwd, (d_state, real))}
  if not args.forward_only:
    fns["D WGAN-GP grad"] = (jax.grad(d_loss), (d_state, g_state, k_gp))
    fns["G grad"] = (jax.grad(g_loss), (g_state, d_state))
    fns[f"{args.critic_steps} critic steps (scan)"] = (critic_steps, (d_state, g_state))
  return {name: (jax.jit(f), a) for name, (f, a) in fns.items()}


def max_rel_diff(a: Any, b: Any) -> float:
  """max |a - b| / max |a| over all leaves of two pytrees of arrays."""
  import jax
  import numpy as np

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  num = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(la, lb))
  den = max(float(np.max(np.abs(np.asarray(x)))) for x in la)
  return num / max(den, 1e-30)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------


def time_pair(
  ours: tuple[Callable, tuple], xla: tuple[Callable, tuple], reps: int, wait_quiet_s: float
) -> dict[str, Any]:
  """Compiles both, then times them alternately `reps` times. Best seconds of each, the relative
  difference of their results, and the median CPU share of other processes while timing."""
  import jax

  compiled = []
  outs = []
  for f, a in (ours, xla):
    c = f.lower(*a).compile()  # one executable; a recompile would raise
    outs.append(jax.block_until_ready(c(*a)))  # warm-up
    compiled.append((c, a))
  best = [float("inf"), float("inf")]
  others: list[float] = []
  meter = common.CpuMeter()
  for _ in range(reps):
    for i, (c, a) in enumerate(compiled):
      common.wait_quiet(wait_quiet_s)
      meter.start()
      t0 = time.perf_counter()
      jax.block_until_ready(c(*a))
      best[i] = min(best[i], time.perf_counter() - t0)
      other = meter.stop()
      if other is not None:
        others.append(other)
  return {
    "ours_s": best[0],
    "xla_s": best[1],
    "rel_diff": max_rel_diff(*outs),
    "other_cpu": statistics.median(others) if others else None,
  }


def bench(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  """Times every row and prints the table."""
  import jax
  from flax import nnx

  from wavegan.config import Config, ModelConfig
  from wavegan.models import kinds, specgan

  cfg = ModelConfig(dim=args.dim, kind="specgan")
  kinds.check(Config(model=cfg).validate())
  kind = kinds.kind_of(cfg)
  g = kind.generator(cfg, rngs=nnx.Rngs(args.seed))
  d = kind.critic(cfg, rngs=nnx.Rngs(args.seed + 1))
  ours = measured_fns(g, d, args)
  xla = measured_fns(xla_variant(g), xla_variant(d), args)
  frames, bins = specgan.image_shape(cfg)
  print(
    f"SpecGAN d={args.dim}, batch {args.batch}, {frames} x {bins} images; jax "
    f"{jax.__version__} ({jax.default_backend()}), {common.cpu_model()}, "
    f"{os.cpu_count()} cores; best of {args.reps}",
    flush=True,
  )

  results = {}
  for name in ours:
    results[name] = time_pair(ours[name], xla[name], args.reps, args.wait_quiet)
    r = results[name]
    print(
      f"  {name}: ours {r['ours_s'] * 1e3:.1f} ms, XLA {r['xla_s'] * 1e3:.1f} ms",
      file=sys.stderr,
      flush=True,
    )

  print()
  print("| measurement | ours (ms) | XLA (ms) | XLA/ours |")
  print("|---|---:|---:|---:|")
  for name, r in results.items():
    print(
      f"| {name} | {r['ours_s'] * 1e3:.1f} | {r['xla_s'] * 1e3:.1f} | "
      f"{r['xla_s'] / r['ours_s']:.2f}x |"
    )
  print()
  worst = max(r["rel_diff"] for r in results.values())
  flag = "" if worst < MATCH_TOL else f"  MISMATCH (> {MATCH_TOL:g}): the variants differ"
  print(f"ours vs XLA results: max relative difference {worst:.1e}{flag}")
  others = [r["other_cpu"] for r in results.values() if r["other_cpu"] is not None]
  if others:
    print(
      f"other processes' CPU share while timing: median {statistics.median(others):.0%}, "
      f"worst row {max(others):.0%}"
    )
  return results


def main(argv: list[str] | None = None) -> None:
  bench(parse_args(argv))


if __name__ == "__main__":
  main()
