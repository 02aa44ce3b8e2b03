"""Training speed: full WaveGAN iterations (n_critic WGAN-GP D updates + 1 G update + EMA).

    python benchmarks/bench_train.py --batch 64 --steps 3
    python benchmarks/bench_train.py --steps 2 --vs-torch --wait-quiet 30
    python benchmarks/bench_train.py --batch 16 --devices 2     # data parallel over 2 devices
    python benchmarks/bench_train.py --batch 16 --devices 8 --scaling   # + efficiency against 1
    python benchmarks/bench_train.py --dtype bfloat16 --peak-tflops 989 # on a GPU: MFU too
    python benchmarks/bench_train.py --recipes --steps 4    # the quality work's recipes
    python benchmarks/bench_train.py --set compute.conv=direct          # without Winograd

Prints JSON lines, each with a "record" key:
  env      versions, backend, devices, CPU
  params   G / D parameter counts and the analytic GFLOP
  step     one timed iteration: seconds, other_cpu (other processes' CPU share), waited_s, losses
  train    summary: median_s_per_iter, samples_per_s (and per device), gflop_per_iter,
           achieved_gflop_per_s, quiet_* versions over steps with other_cpu < 0.05, compile_s
           (and mfu, model FLOP utilisation, with --peak-tflops)
  recipe   with --recipes, per recipe of RECIPES (after its own step and train records): mean
           seconds and CPU seconds per iteration, D and G updates per second, iterations per
           CPU minute, and its speed against the first (the paper's WGAN-GP)
  scaling  with --scaling: the same benchmark on 1 device (a subprocess), the speedup
           samples_per_s(N) / samples_per_s(1) and the efficiency speedup / N. Simulated CPU
           devices share the machine's cores, so there the speedup (about 1) measures the
           overhead of sharding, not scaling.
With --vs-torch, the PyTorch reference then runs with the same settings (its records are tagged
"impl": "torch"), followed by a `compare` record.

One iteration is one call of `wavegan.training.step.make_train_step`'s jitted step, exactly as the
trainer runs it (the D and G updates are fused in one XLA program, so unlike the reference they
are not timed separately). The real audio is synthetic and prepared before timing; only its shape
matters. --devices N splits the batch over the first N devices; on CPU, N host devices are made
with XLA_FLAGS=--xla_force_host_platform_device_count=N (they share the machine's cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_recipes  # noqa: E402
import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64, help="global batch (split over devices)")
  p.add_argument("--steps", type=int, default=3, help="timed iterations")
  p.add_argument("--warmup", type=int, default=1, help="untimed iterations after compilation")
  p.add_argument("--dim", type=int, default=64, help="model width d")
  p.add_argument("--slice-len", type=int, default=16384, choices=(16384, 32768, 65536))
  p.add_argument("--devices", type=int, default=1, help="data-parallel devices to use")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="compute dtype (parameters and optimiser stay float32)",
  )
  p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per batch")
  p.add_argument("--preset", default="paper", help="the recipe to time (e.g. paper, large)")
  p.add_argument(
    "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override"
  )
  p.add_argument("--remat", action="store_true", help="recompute activations in the backward pass")
  p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, for MFU")
  p.add_argument(
    "--scaling", action="store_true", help="also run on 1 device and report the scaling efficiency"
  )
  p.add_argument(
    "--recipes", action="store_true", help="time each of the quality work's recipes instead"
  )
  common.add_torch_args(p)
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.devices < 1:
    p.error("need --steps >= 1, --warmup >= 0, --batch >= 1, --devices >= 1")
  if args.batch % args.devices:
    p.error(f"--batch {args.batch} does not divide over {args.devices} devices")
  return args


def force_host_devices(n: int) -> None:
  """Asks XLA for n CPU devices; must run before jax is imported. Only the CPU backend reads
  the flag, so on GPU/TPU the accelerators are used as they are."""
  if n <= 1 or "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def bench_jax(args: argparse.Namespace) -> common.Timing:
  """Times the jitted training step and prints env / params / step / train records."""
  force_host_devices(args.devices)
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from wavegan.config import apply_overrides
  from wavegan.presets import preset
  from wavegan.training import step as ts

  if args.devices > jax.device_count():
    sys.exit(
      f"error: --devices {args.devices} but only {jax.device_count()} "
      f"{jax.default_backend()} devices"
    )
  cfg = apply_overrides(
    preset(args.preset),
    [
      f"model.dim={args.dim}",
      f"model.slice_len={args.slice_len}",
      f"train.batch_size={args.batch}",
      f"train.seed={args.seed}",
      f"compute.dtype={args.dtype}",
      f"compute.grad_accum={args.grad_accum}",
      f"compute.remat={args.remat}",
      *args.set,
    ],
  ).validate()
  m, n_critic = cfg.model, cfg.optim.n_critic
  devices = jax.devices()[: args.devices]
  common.emit(
    "env",
    **common.jax_env(
      jax,
      devices,
      what="train",
      batch=args.batch,
      slice_len=m.slice_len,
      dim=m.dim,
      n_critic=n_critic,
      loss=cfg.optim.loss,
      preset=args.preset,
      overrides=args.set,
      warmup=args.warmup,
      steps=args.steps,
      wait_quiet=args.wait_quiet,
      dtype=args.dtype,
      grad_accum=args.grad_accum,
      remat=args.remat,
    ),
  )

  mesh = ts.data_mesh(devices)
  models, state = ts.build(cfg)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
  flops = common.flop_counts(
    m.dim,
    m.slice_len,
    latent_dim=m.latent_dim,
    kernel_len=m.kernel_len,
    channels=m.channels,
    n_critic=n_critic,
  )
  common.emit(
    "params",
    impl="jax",
    G=count(state.g_params),
    D=count(state.d_params),
    G_fwd_gflop_per_sample=round(flops["g_fwd"] / 1e9, 4),
    D_fwd_gflop_per_sample=round(flops["d_fwd"] / 1e9, 4),
    iter_gflop_per_sample=round(flops["iter"] / 1e9, 4),
  )

  state = jax.device_put(state, NamedSharding(mesh, P()))
  batch_sharding = NamedSharding(mesh, P(None, ts.DATA_AXIS))
  rng = np.random.default_rng(args.seed)
  shape = (n_critic, args.batch, m.slice_len, m.channels)
  t = np.arange(m.slice_len, dtype=np.float32)[:, None] / cfg.data.sample_rate
  freq = rng.uniform(50, 2000, size=shape[:2] + (1, 1)).astype(np.float32)
  audio = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(shape, np.float32)
  real = jax.device_put(audio.astype(np.float32), batch_sharding)
  styles = jax.device_put(np.zeros(shape[:2], np.int32), batch_sharding)
  del audio

  step = ts.make_train_step(models, cfg, mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, real, styles).compile()  # one executable; a recompile would raise
  compile_s = time.perf_counter() - t0

  for _ in range(args.warmup):
    state, metrics = compiled(state, real, styles)
    jax.block_until_ready((state, metrics))
  seconds: list[float] = []
  others: list[float | None] = []
  cpu_s: list[float] = []
  meter = common.CpuMeter()
  for i in range(args.steps):
    waited = common.wait_quiet(args.wait_quiet)
    meter.start()
    t0 = time.perf_counter()
    state, metrics = compiled(state, real, styles)
    jax.block_until_ready((state, metrics))
    dt = time.perf_counter() - t0
    other = meter.stop()
    seconds.append(dt)
    others.append(other)
    cpu_s.append(meter.own_s)
    losses = {k: round(float(metrics[k]), 5) for k in ("d/loss", "d/gp", "g/loss") if k in metrics}
    common.emit(
      "step",
      impl="jax",
      what="train",
      step=i,
      seconds=round(dt, 4),
      other_cpu=other,
      waited_s=waited,
      **losses,
    )
  timing = common.summarize(seconds, others, cpu_s)
  emit_summary(args, timing, flops, m.slice_len, n_critic, compile_s)
  return timing


def emit_summary(
  args: argparse.Namespace,
  t: common.Timing,
  flops: dict[str, Any],
  slice_len: int,
  n_critic: int,
  compile_s: float,
) -> None:
  """Prints the `train` summary record."""
  gflop_iter = flops["iter"] * args.batch / 1e9
  samples = common.rate(args.batch, t.median_s)
  quiet_samples = common.rate(args.batch, t.quiet_median_s)
  per_device = lambda x: None if x is None else round(x / args.devices, 3)  # noqa: E731
  common.emit(
    "train",
    impl="jax",
    batch=args.batch,
    slice_len=slice_len,
    steps=args.steps,
    n_critic=n_critic,
    devices=args.devices,
    median_s_per_iter=round(t.median_s, 4),
    min_s_per_iter=round(t.min_s, 4),
    quiet_median_s_per_iter=common.r5(t.quiet_median_s),
    quiet_steps=t.quiet_steps,
    median_other_cpu=t.median_other_cpu,
    samples_per_s=samples,
    quiet_samples_per_s=quiet_samples,
    samples_per_s_per_device=per_device(samples),
    quiet_samples_per_s_per_device=per_device(quiet_samples),
    gflop_per_iter=round(gflop_iter, 1),
    gflop_per_d_step=round(flops["d_step"] * args.batch / 1e9, 1),
    gflop_per_g_step=round(flops["g_step"] * args.batch / 1e9, 1),
    achieved_gflop_per_s=common.rate(gflop_iter, t.median_s, 2),
    quiet_achieved_gflop_per_s=common.rate(gflop_iter, t.quiet_median_s, 2),
    compile_s=round(compile_s, 2),
    peak_rss_gb=common.peak_rss_gb(),
    **(
      {
        "mfu": round(
          common.rate(gflop_iter, t.median_s, 2) / (args.peak_tflops * 1e3 * args.devices), 4
        )
      }
      if args.peak_tflops
      else {}
    ),
  )


def scaling(args: argparse.Namespace, timing: common.Timing) -> None:
  """Runs this benchmark on 1 device in a subprocess and prints the `scaling` record."""
  import json
  import subprocess

  argv = [a for a in sys.argv[1:] if a != "--scaling"]
  if "--devices" in argv:
    i = argv.index("--devices")
    del argv[i : i + 2]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, __file__, *argv, "--devices", "1"],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  one = [json.loads(l) for l in out.splitlines() if '"record": "train"' in l][-1]
  n_rate = common.rate(args.batch, timing.median_s)
  common.emit(
    "scaling",
    devices=args.devices,
    samples_per_s=n_rate,
    samples_per_s_1_device=one["samples_per_s"],
    speedup=round(n_rate / one["samples_per_s"], 3),
    efficiency=round(n_rate / (args.devices * one["samples_per_s"]), 3),
  )


# The quality work's recipes (README, "Training recipes at equal compute"), on the benchmark's
# model: what each costs per iteration (n_critic D updates + 1 G update), to turn the recipe
# comparisons' curves into time to quality. Named and built as `bench_recipes.py` builds them.
RECIPES: dict[str, list[str]] = {
  "WGAN-GP, n_critic 5 (paper)": [],
  "NS + R1 every 4, n_critic 5": bench_recipes.NS_R1,
  "NS + R1 every 4, n_critic 1 + TTUR": [*bench_recipes.NS_R1, *bench_recipes.TTUR],
  "NS + R1 every update, n_critic 1 + TTUR": [
    *bench_recipes.NS_R1,
    *bench_recipes.TTUR,
    "optim.r1_every=1",
  ],
  "NS + R1 every 4, n_critic 1 + TTUR, augment p 0.25": [
    *bench_recipes.NS_R1,
    *bench_recipes.TTUR,
    "augment.p=0.25",
  ],
}
R1_PERIOD = 4  # timed iterations per recipe are a multiple of this (lazy R1's period)


def recipes(args: argparse.Namespace) -> None:
  """Times each of RECIPES (each after the others; the mean over a whole number of lazy-R1
  periods) and prints a `recipe` record per recipe, with its throughput against the first."""
  from wavegan.config import apply_overrides
  from wavegan.presets import preset

  steps = -(-args.steps // R1_PERIOD) * R1_PERIOD
  first = None
  for name, overrides in RECIPES.items():
    run = argparse.Namespace(**{**vars(args), "set": [*args.set, *overrides], "steps": steps})
    n_critic = apply_overrides(preset(args.preset), run.set).optim.n_critic
    t = bench_jax(run)
    first = first or t
    common.emit(
      "recipe",
      recipe=name,
      overrides=overrides,
      n_critic=n_critic,
      steps=steps,
      mean_s_per_iter=round(t.mean_s, 4),
      cpu_s_per_iter=common.r5(t.mean_cpu_s),
      g_updates_per_s=common.rate(1, t.mean_s, 4),
      d_updates_per_s=common.rate(n_critic, t.mean_s, 4),
      samples_per_s=common.rate(args.batch, t.mean_s),
      iters_per_cpu_minute=common.rate(60, t.mean_cpu_s, 2),
      speed_vs_first=round(first.mean_s / t.mean_s, 3),
    )


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if args.recipes:
    recipes(args)
    return
  if args.scaling and args.devices > 1:
    timing = bench_jax(args)
    scaling(args, timing)
    return
  common.run_with_reference("train", args, bench_jax, per="iter")


if __name__ == "__main__":
  main()
