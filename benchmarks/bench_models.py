"""Model zoo at equal compute: each variant trains on the built-in corpus for the same CPU time.

    python benchmarks/bench_models.py --cpu-minutes 16 --out runs/zoo

Variants: the waveform model (demo preset, with the paper's WGAN-GP recipe it had when the zoo
was measured: `bench_recipes.BASE`), the same with the three extra discriminators
(`model.aux_discs=mrstft,msd,mpd`, 4 channels wide) and with HiFi-GAN's multi-period one alone,
SpecGAN (`model.kind=specgan`), and the waveform model conditioned on pitch
(`data.attributes=pitch`). Each run stops after `--cpu-minutes` of training
CPU time (`train.max_cpu_minutes`: previews and evaluations excluded), then `wavegan evaluate`
scores it; the table of style accuracy, Frechet distance, KID and steps reached is printed and
written to OUT/results.md. Variants already evaluated in OUT are not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_recipes  # noqa: E402

VARIANTS = {
  "waveform": [],
  # Width 4: at the default 16 the three extra critics cost ~20x the demo model's step on a CPU.
  "waveform + MRD/MSD/MPD": ["model.aux_discs=mrstft,msd,mpd", "model.aux_width=4"],
  "waveform + MPD": ["model.aux_discs=mpd", "model.aux_width=4"],
  "specgan": ["model.kind=specgan"],
  "waveform, pitch-conditioned": ["data.attributes=pitch"],
}


def slug(name: str) -> str:
  return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def wavegan(*args: str) -> None:
  cmd = [sys.executable, "-m", "wavegan.cli", *args]
  print("$ wavegan " + " ".join(args), flush=True)
  subprocess.run(cmd, check=True)


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--cpu-minutes", type=float, default=16.0)
  p.add_argument("--n", type=int, default=600, help="generated clips per evaluation")
  p.add_argument("--out", default="runs/zoo")
  p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
  args = p.parse_args()
  rows = []
  for name, sets in VARIANTS.items():
    if args.only and name not in args.only:
      continue
    run = os.path.join(args.out, slug(name))
    report_path = os.path.join(run, "eval", "report.json")
    if not os.path.exists(report_path):
      overrides = [
        f"train.max_cpu_minutes={args.cpu_minutes}",
        "train.steps=1000000",
        "train.checkpoint_every=200",
        *bench_recipes.BASE,  # the zoo was measured with the demo's former recipe
        *sets,
      ]
      wavegan(
        "train",
        "--preset",
        "demo",
        "--workdir",
        run,
        "--no-progress",
        *[a for s in overrides for a in ("--set", s)],
      )
      wavegan("evaluate", "--workdir", run, "--n", str(args.n), "--out", os.path.join(run, "eval"))
    with open(report_path) as f:
      r = json.load(f)
    g = r["generated"]
    pitch = r.get("attributes", {}).get("pitch")
    rows.append(
      f"| {name} | {r['step']} | {g.get('style_accuracy', float('nan')):.3f} | "
      f"{g['fd']:.1f} | {g['kid']:.4f} | " + (f"{pitch['spearman']:.2f}" if pitch else "-") + " |"
    )
  table = "\n".join(
    [
      f"Built-in corpus, {args.cpu_minutes:g} CPU minutes of training each, "
      f"{args.n} generated clips per evaluation.",
      "",
      "| variant | steps | style accuracy | FD | KID | pitch rank correlation |",
      "| --- | --- | --- | --- | --- | --- |",
      *rows,
    ]
  )
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
