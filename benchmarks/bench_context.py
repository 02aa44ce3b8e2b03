"""The cost of long-range context and extra critics: one training step with and without them.

    python benchmarks/bench_context.py                       # demo preset, d=16, batch 16, 16384
    python benchmarks/bench_context.py --only none "recurrent GRU"

Each variant is the `--preset` config plus its overrides (`VARIANTS`), timed like one slice length
of `bench_lengths.py` (a fresh process, the jitted step compiled once, the median of `--steps`
timed steps after `--warmup`, the peak resident memory and XLA's plan of the step's buffers).
Prints JSON lines, then a Markdown table with each variant's step time as a multiple of "none"'s.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lengths  # noqa: E402
import common  # noqa: E402

VARIANTS: dict[str, list[str]] = {
  "none": [],
  "attention 64": ["model.attention=64"],
  "attention 256": ["model.attention=256"],
  "attention 64, 256": ["model.attention=64,256"],
  "attention 1024": ["model.attention=1024"],
  "attention 1024, 1 head": ["model.attention=1024", "model.attention_heads=1"],
  "recurrent GRU": ["model.recurrent=gru"],
  "recurrent LSTM": ["model.recurrent=lstm"],
  "attention 256 + recurrent GRU": ["model.attention=256", "model.recurrent=gru"],
  "extra critics MPD (width 8)": ["model.aux_discs=mpd", "model.aux_width=8"],
  "extra critics MPD (width 8), projection": [
    "model.aux_discs=mpd",
    "model.aux_width=8",
    "model.aux_cond=projection",
  ],
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="demo")
  p.add_argument("--dim", type=int, default=16)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--slice-len", type=int, default=16384, choices=bench_lengths.LENGTHS)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--only", nargs="+", help="variant names (default: all)")
  args = p.parse_args()
  unknown = set(args.only or ()) - set(VARIANTS)
  if unknown:
    p.error(f"unknown variants {sorted(unknown)}; valid: {list(VARIANTS)}")
  names = [n for n in VARIANTS if not args.only or n in args.only]
  rows: dict[str, dict[str, Any] | None] = {}
  for i, name in enumerate(names):
    sets = [w for item in VARIANTS[name] for w in ("--set", item)]
    child = bench_lengths.parse_args(
      [
        "--lengths",
        str(args.slice_len),
        "--preset",
        args.preset,
        "--dim",
        str(args.dim),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *sets,
      ]
    )
    rows[name] = bench_lengths.run_child(child, args.slice_len, first=i == 0)
  base = (rows.get("none") or {}).get("median_s_per_step")
  print(
    f"\npreset {args.preset}, d={args.dim}, batch {args.batch}, {args.slice_len} samples, "
    f"{args.steps} timed steps after {args.warmup} warm-up, {common.cpu_model()} "
    f"({os.cpu_count()} cores)\n"
  )
  print(
    "| variant | step (s, median) | x none | compile (s) | peak RSS (GiB) | XLA buffers (GiB) |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  for name, row in rows.items():
    if row is None:
      print(f"| {name} | failed (see above) | | | | |")
      continue
    s = row["median_s_per_step"]
    ratio = f"{s / base:.2f}x" if base else "-"
    xla = row.get("xla_total_gb")
    print(
      f"| {name} | {s:.3f} | {ratio} | {row['compile_s']:.1f} | {row['peak_rss_gb']:.2f} | "
      f"{'-' if xla is None else f'{xla:.2f}'} |"
    )


if __name__ == "__main__":
  main()
