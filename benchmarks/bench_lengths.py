"""Training cost per slice length: step time and peak memory from 16384 to 262144 samples.

    python benchmarks/bench_lengths.py                                  # demo preset, d=16, batch 16
    python benchmarks/bench_lengths.py --lengths 16384 32768 --batch 2 --steps 2   # a smoke run
    python benchmarks/bench_lengths.py --preset large --dim 64 --batch 64          # an accelerator

Each length runs in a fresh subprocess (this script with --one LENGTH), so the peak resident
memory it reports (ru_maxrss, which Linux carries across fork and exec) is that length's alone.
One length is: the config (`--preset` with model.dim, model.slice_len, train.batch_size and any
`--set`), `wavegan.training.step.make_train_step`'s jitted step compiled once, `--warmup` untimed
steps, then `--steps` timed ones on synthetic audio (only its shape matters).

Prints JSON lines, each with a "record" key:
  env     versions, backend, devices, CPU and the settings (once, from the first length)
  length  per slice length: seconds of audio at --sample-rate, G / D parameters, compile_s,
          median_s_per_step, min_s_per_step, clips_per_s, audio_s_per_s, peak_rss_gb (the
          process), xla_* GiB (the compiled step's memory analysis: arguments, outputs, temporaries
          and their sum less donated buffers, `xla_total_gb`), device_peak_gb (accelerators' own
          peak, where the backend reports it)
  error   a length that failed (e.g. out of memory), with the subprocess' last stderr line
and, last, the same figures as a Markdown table (the README's "Longer and wider audio" table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LENGTHS = (16384, 32768, 65536, 131072, 262144)
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--lengths", type=int, nargs="+", default=list(LENGTHS), choices=LENGTHS, help="slice lengths"
  )
  p.add_argument("--preset", default="demo", help="the config to time (tiny, demo, paper, large)")
  p.add_argument("--dim", type=int, default=16, help="model width d")
  p.add_argument("--batch", type=int, default=16, help="batch size")
  p.add_argument("--steps", type=int, default=3, help="timed steps")
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--sample-rate", type=int, default=44100, help="for the seconds of audio a clip holds"
  )
  p.add_argument(
    "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override"
  )
  p.add_argument(
    "--timeout", type=float, default=0.0, help="seconds per length before giving up; 0 = none"
  )
  p.add_argument("--one", type=int, choices=LENGTHS, help=argparse.SUPPRESS)  # a child's length
  p.add_argument("--no-env", action="store_true", help=argparse.SUPPRESS)  # ... not its first
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.dim < 1:
    p.error("need --steps >= 1, --warmup >= 0, --batch >= 1, --dim >= 1")
  return args


def bench_one(args: argparse.Namespace, slice_len: int, with_env: bool) -> dict[str, Any]:
  """Times one slice length in this process and prints its `length` record (and `env`)."""
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from wavegan.config import apply_overrides
  from wavegan.models import kinds
  from wavegan.presets import preset
  from wavegan.training import step as ts

  cfg = apply_overrides(
    preset(args.preset),
    [
      f"model.dim={args.dim}",
      f"model.slice_len={slice_len}",
      f"train.batch_size={args.batch}",
      f"train.seed={args.seed}",
      *args.set,
    ],
  ).validate()
  kinds.check(cfg)
  m, n_critic = cfg.model, cfg.optim.n_critic
  devices = jax.devices()[:1]
  if with_env:
    common.emit(
      "env",
      **common.jax_env(
        jax,
        devices,
        what="lengths",
        preset=args.preset,
        dim=m.dim,
        batch=args.batch,
        n_critic=n_critic,
        loss=cfg.optim.loss,
        overrides=args.set,
        warmup=args.warmup,
        steps=args.steps,
        sample_rate=args.sample_rate,
      ),
    )
  mesh = ts.data_mesh(devices)
  models, state = ts.build(cfg)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
  g_params, d_params = count(state.g_params), count(state.d_params)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  batch_sharding = NamedSharding(mesh, P(None, ts.DATA_AXIS))
  rng = np.random.default_rng(args.seed)
  shape = (n_critic, args.batch, slice_len, m.channels)
  t = np.arange(slice_len, dtype=np.float32)[:, None] / args.sample_rate
  freq = rng.uniform(50, 2000, size=shape[:2] + (1, 1)).astype(np.float32)
  audio = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(shape, np.float32)
  real = jax.device_put(audio.astype(np.float32), batch_sharding)
  styles = jax.device_put(np.zeros(shape[:2], np.int32), batch_sharding)
  del audio
  moments = None
  if kinds.kind_of(m).statistics is not None:  # SpecGAN: unit moments (only shapes matter)
    bins = m.n_fft // 2
    moments = (np.zeros(bins, np.float32), np.ones(bins, np.float32))

  step = ts.make_train_step(models, cfg, mesh, moments)
  t0 = time.perf_counter()
  compiled = step.lower(state, real, styles).compile()  # one executable; a recompile would raise
  compile_s = time.perf_counter() - t0
  xla = _memory_analysis(compiled)

  for _ in range(args.warmup):
    state, metrics = compiled(state, real, styles)
    jax.block_until_ready((state, metrics))
  seconds = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, real, styles)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - t0)
  median = float(np.median(seconds))
  return common.emit(
    "length",
    slice_len=slice_len,
    audio_s=round(slice_len / args.sample_rate, 3),
    sample_rate=args.sample_rate,
    batch=args.batch,
    G=g_params,
    D=d_params,
    compile_s=round(compile_s, 2),
    median_s_per_step=round(median, 4),
    min_s_per_step=round(min(seconds), 4),
    clips_per_s=common.rate(args.batch, median),
    audio_s_per_s=common.rate(args.batch * slice_len / args.sample_rate, median, 2),
    peak_rss_gb=common.peak_rss_gb(),
    **xla,
    device_peak_gb=_device_peak_gb(devices[0]),
  )


def _memory_analysis(compiled: Any) -> dict[str, float | None]:
  """The compiled step's buffers in GiB, as XLA plans them (None where the backend has none)."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    stats = None
  if stats is None:
    return {"xla_total_gb": None}
  sizes = {
    name: getattr(stats, f"{name}_size_in_bytes", 0) or 0
    for name in ("argument", "output", "temp", "alias")
  }
  total = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
  out = {f"xla_{k}_gb": round(v / GIB, 3) for k, v in sizes.items() if k != "alias"}
  return {**out, "xla_total_gb": round(total / GIB, 3)}


def _device_peak_gb(device: Any) -> float | None:
  """The device's peak bytes in use (GPUs and TPUs report it; the CPU does not)."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001
    return None
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else round(peak / GIB, 3)


def run_child(args: argparse.Namespace, slice_len: int, first: bool) -> dict[str, Any] | None:
  """Runs one length in a fresh interpreter, re-printing its records; its `length` record."""
  settings = {
    "--preset": args.preset,
    "--dim": args.dim,
    "--batch": args.batch,
    "--steps": args.steps,
    "--warmup": args.warmup,
    "--seed": args.seed,
    "--sample-rate": args.sample_rate,
    "--one": slice_len,
  }
  cmd = [sys.executable, __file__, *(str(w) for kv in settings.items() for w in kv)]
  cmd += [w for item in args.set for w in ("--set", item)] + ([] if first else ["--no-env"])
  try:
    proc = subprocess.run(
      cmd, capture_output=True, text=True, timeout=args.timeout or None, check=False
    )
  except subprocess.TimeoutExpired:
    common.emit("error", slice_len=slice_len, message=f"timed out after {args.timeout:g} s")
    return None
  record = None
  for line in proc.stdout.splitlines():
    try:
      obj = json.loads(line)
    except json.JSONDecodeError:
      continue
    print(line, flush=True)
    if obj.get("record") == "length":
      record = obj
  if proc.returncode != 0 or record is None:
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    common.emit("error", slice_len=slice_len, returncode=proc.returncode, message=last[:500])
    return None
  return record


def _gb(x: float | None) -> str:
  return "-" if x is None else f"{x:.2f}"


def markdown(args: argparse.Namespace, rows: list[dict[str, Any] | None]) -> str:
  """The figures as a Markdown table, one row per length (a failed one says so)."""
  head = (
    f"| samples | seconds at {args.sample_rate} Hz | G / D parameters | compile (s) | "
    "step (s, median) | audio s per s | peak RSS (GiB) | XLA buffers (GiB) |"
  )
  lines = [head, "| " + " | ".join(["---"] * 8) + " |"]
  for length, row in zip(args.lengths, rows):
    if row is None:
      cells = [str(length), f"{length / args.sample_rate:.2f}", "failed (see above)"] + [""] * 5
      lines.append("| " + " | ".join(cells) + " |")
      continue
    lines.append(
      f"| {length} | {row['audio_s']:.2f} | {row['G'] / 1e6:.2f} M / {row['D'] / 1e6:.2f} M "
      f"| {row['compile_s']:.1f} | {row['median_s_per_step']:.3f} | {row['audio_s_per_s']} "
      f"| {_gb(row['peak_rss_gb'])} | {_gb(row.get('xla_total_gb'))} |"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if args.one is not None:
    bench_one(args, args.one, with_env=not args.no_env)
    return
  rows = [run_child(args, n, first=i == 0) for i, n in enumerate(args.lengths)]
  print(
    f"\npreset {args.preset}, d={args.dim}, batch {args.batch}, {args.steps} timed steps after "
    f"{args.warmup} warm-up, {common.cpu_model()} ({os.cpu_count()} cores)\n"
  )
  print(markdown(args, rows))


if __name__ == "__main__":
  main()
