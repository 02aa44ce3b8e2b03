"""Generation speed: batches of audio from the (EMA) generator, forward only, float32.

    python benchmarks/bench_generate.py --batch 64 --steps 20
    python benchmarks/bench_generate.py --steps 10 --vs-torch --wait-quiet 10
    python benchmarks/bench_generate.py --conv direct    # without Winograd (see compute.conv)

Prints JSON lines, each with a "record" key:
  env      versions, backend, devices, CPU
  params   G's parameter count and the analytic GFLOP per sample
  step     one timed batch: seconds, other_cpu (other processes' CPU share), waited_s
  gen      summary: median_s_per_batch, clips_per_s, audio_s_per_s (16 kHz), gflop_per_sample,
           achieved_gflop_per_s, and quiet_* versions over the steps with other_cpu < 0.05
With --vs-torch, the PyTorch reference then runs with the same settings (its records are tagged
"impl": "torch"), followed by a `compare` record.

A timed step draws fresh latents z ~ U[-1, 1]^100 and runs the jitted generator, blocking on the
audio; compilation is timed separately (compile_s) and the warmup batches are not timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  from wavegan.config import CONV_ALGORITHMS

  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=20, help="timed batches")
  p.add_argument("--warmup", type=int, default=2, help="untimed batches after compilation")
  p.add_argument("--dim", type=int, default=64, help="model width d")
  p.add_argument("--slice-len", type=int, default=16384, choices=(16384, 32768, 65536))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--conv",
    default="auto",
    choices=CONV_ALGORITHMS,
    help="the layers' convolutions",
  )
  common.add_torch_args(p)
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 1:
    p.error("need --steps >= 1, --warmup >= 0, --batch >= 1")
  return args


def bench_jax(args: argparse.Namespace) -> common.Timing:
  """Times the JAX generator and prints env / params / step / gen records."""
  import jax
  import jax.numpy as jnp

  from wavegan.config import apply_overrides
  from wavegan.models import kinds
  from wavegan.models.layers import conv_algorithm
  from wavegan.presets import preset
  from wavegan.training import step as ts

  cfg = apply_overrides(
    preset("paper"), [f"model.dim={args.dim}", f"model.slice_len={args.slice_len}"]
  ).validate()
  kinds.check(cfg)
  m = cfg.model
  common.emit(
    "env",
    **common.jax_env(
      jax,
      jax.devices()[:1],
      what="gen",
      batch=args.batch,
      slice_len=m.slice_len,
      dim=m.dim,
      warmup=args.warmup,
      steps=args.steps,
      wait_quiet=args.wait_quiet,
      conv=args.conv,
    ),
  )
  models, state = ts.build(cfg, seed=args.seed)
  params = state.ema_params
  del state
  flops = common.flop_counts(
    m.dim, m.slice_len, latent_dim=m.latent_dim, kernel_len=m.kernel_len, channels=m.channels
  )
  n_params = sum(x.size for x in jax.tree.leaves(params))
  common.emit(
    "params", impl="jax", G=n_params, G_fwd_gflop_per_sample=round(flops["g_fwd"] / 1e9, 4)
  )

  generate = jax.jit(lambda p, z: models.generator(p)(z, None))
  sample_z = jax.jit(lambda key: ts.sample_latents(key, args.batch, m.latent_dim))
  keys = jax.random.split(jax.random.key(args.seed), args.warmup + args.steps)
  z0 = sample_z(keys[0])
  t0 = time.perf_counter()
  with conv_algorithm(args.conv):  # read when the generator is traced
    compiled = generate.lower(params, z0).compile()  # one executable; a recompile would raise
  compile_s = time.perf_counter() - t0

  def run(key: jax.Array) -> jax.Array:
    return jax.block_until_ready(compiled(params, sample_z(key)))

  for i in range(args.warmup):
    run(keys[i])
  seconds: list[float] = []
  others: list[float | None] = []
  meter = common.CpuMeter()
  for i in range(args.steps):
    waited = common.wait_quiet(args.wait_quiet)
    meter.start()
    t0 = time.perf_counter()
    audio = run(keys[args.warmup + i])
    dt = time.perf_counter() - t0
    other = meter.stop()
    assert audio.shape == (args.batch, m.slice_len, m.channels) and audio.dtype == jnp.float32
    seconds.append(dt)
    others.append(other)
    common.emit(
      "step", impl="jax", what="gen", step=i, seconds=round(dt, 5), other_cpu=other, waited_s=waited
    )
  t = common.summarize(seconds, others)
  emit_summary(args, t, flops, m.slice_len, compile_s)
  return t


def emit_summary(
  args: argparse.Namespace,
  t: common.Timing,
  flops: dict[str, Any],
  slice_len: int,
  compile_s: float,
) -> None:
  """Prints the `gen` summary record."""
  gflop_batch = flops["g_fwd"] * args.batch / 1e9
  audio_s = args.batch * slice_len / common.SAMPLE_RATE
  common.emit(
    "gen",
    impl="jax",
    batch=args.batch,
    slice_len=slice_len,
    steps=args.steps,
    median_s_per_batch=common.r5(t.median_s),
    min_s_per_batch=common.r5(t.min_s),
    quiet_median_s_per_batch=common.r5(t.quiet_median_s),
    quiet_steps=t.quiet_steps,
    median_other_cpu=t.median_other_cpu,
    clips_per_s=common.rate(args.batch, t.median_s),
    quiet_clips_per_s=common.rate(args.batch, t.quiet_median_s),
    audio_s_per_s=common.rate(audio_s, t.median_s, 2),
    quiet_audio_s_per_s=common.rate(audio_s, t.quiet_median_s, 2),
    gflop_per_sample=round(flops["g_fwd"] / 1e9, 4),
    achieved_gflop_per_s=common.rate(gflop_batch, t.median_s, 2),
    quiet_achieved_gflop_per_s=common.rate(gflop_batch, t.quiet_median_s, 2),
    compile_s=round(compile_s, 2),
    peak_rss_gb=common.peak_rss_gb(),
  )


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  common.run_with_reference("gen", args, bench_jax, per="batch")


if __name__ == "__main__":
  main()
