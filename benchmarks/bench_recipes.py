"""Training recipes at equal compute: every variant trains for the same CPU time, then is judged.

    python benchmarks/bench_recipes.py --cpu-minutes 16 --out runs/recipes/builtin
    python benchmarks/bench_recipes.py --data FSDD_FOLDER --cpu-minutes 30 \\
        --out runs/recipes/fsdd --only default "<variant>" ...

Each variant is the `demo` preset with the paper's WGAN-GP recipe (`BASE`, the demo's recipe
before this comparison) plus its `--set` overrides (`VARIANTS`). A run stops after
`--cpu-minutes` of training CPU time (`train.max_cpu_minutes`: data preparation, the reference
classifier, previews and light evaluations are not counted), then `wavegan evaluate --n N` scores
it. The light evaluations during training (every `eval.every` steps, with the training CPU minutes
they were taken at) give the curves. Written to OUT:

- results.md: one row per variant (steps reached; today's judge: style accuracy, FD, KID, NDB/K
  and the nearest-neighbour memorisation ratio; the hardened judge's style accuracy, accepted
  style accuracy and FD; the upsampling tones, mean peakiness in dB over the upsampling periods;
  the spectral-shape distance to the real clips), and the light evaluations of every variant at
  each CPU minute;
- curves.png: FD and style accuracy against training CPU minutes, every variant in one figure.

`--steps N` trains every variant for N generator steps instead (equal steps, not equal compute:
for variants whose step costs several times the others', to tell what they learn per step from
what they cost).

Variants already evaluated in OUT are not run again, so variants can be added one at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np

# What every variant starts from: the demo preset with the paper's WGAN-GP recipe (5 critic
# updates per G update, learning rates 1e-4), its recipe before this comparison ("default").
BASE = [
  "optim.loss=wgan-gp",
  "optim.n_critic=5",
  "optim.d_lr=1e-4",
  "optim.r1_weight=0",
  "optim.r1_every=1",
  "optim.stft_weight=0",
  "optim.stft_by_style=false",
  "optim.stft_frames=false",
]
# Each option alone against the default, then combinations of the winners. Values follow the
# sources in the README's "Training recipes" section.
NS_R1 = ["optim.loss=nonsaturating", "optim.r1_weight=1", "optim.r1_every=4"]
TTUR = ["optim.n_critic=1", "optim.d_lr=4e-4"]
SPECTRUM = ["optim.stft_weight=1", "optim.stft_by_style=true"]
SPECTROGRAM = [*SPECTRUM, "optim.stft_frames=true"]
# The network's remedies (long-range context, style-aware extra critics), each on top of the
# best recipe without them: the demo's (spectrogram per style) on the built-in corpus, the
# spectrum per style on the spoken digits.
DEMO = [*NS_R1, *TTUR, *SPECTROGRAM]
SPEECH = [*NS_R1, *TTUR, *SPECTRUM]
EXTRA_CRITICS = ["model.aux_discs=mpd", "model.aux_width=8"]
STRUCTURES: dict[str, list[str]] = {
  "attention 64": ["model.attention=64"],
  "attention 256": ["model.attention=256"],
  "recurrent GRU": ["model.recurrent=gru"],
  "attention 256 + recurrent GRU": ["model.attention=256", "model.recurrent=gru"],
  "attention 64 + recurrent GRU": ["model.attention=64", "model.recurrent=gru"],
  "extra critics (MPD)": EXTRA_CRITICS,
  "extra critics (MPD), projection": [*EXTRA_CRITICS, "model.aux_cond=projection"],
}
SPECTRAL = ("specgan", "complex", "ifspec")
VARIANTS: dict[str, list[str]] = {
  "default": [],
  "nonsaturating + R1": NS_R1,
  "hinge + R1": ["optim.loss=hinge", "optim.r1_weight=1", "optim.r1_every=4"],
  "n_critic 1 + TTUR": ["optim.n_critic=1", "optim.d_lr=4e-4"],
  "minibatch std": ["model.mbstd_group=4"],
  "spectral norm": ["model.spectral_norm=true"],
  "augment p 0.25": ["augment.p=0.25"],
  "nearest upsampling": ["model.g_upsample=nearest"],
  "nonsaturating + R1 + ADA": [*NS_R1, "augment.ada_target=0.6"],
  "NS + R1, n_critic 1 + TTUR": [*NS_R1, *TTUR],
  "NS + R1, n_critic 1 + TTUR, AC-GAN": [*NS_R1, *TTUR, "model.d_cond=acgan"],
  "NS + R1, n_critic 1 + TTUR, spectrum per style": [*NS_R1, *TTUR, *SPECTRUM],
  "NS + R1, n_critic 1 + TTUR, spectrogram per style": [*NS_R1, *TTUR, *SPECTROGRAM],
  "NS + R1, n_critic 1 + TTUR, spectrogram per style, AC-GAN": [
    *NS_R1,
    *TTUR,
    *SPECTROGRAM,
    "model.d_cond=acgan",
  ],
  "NS + R1, n_critic 1 + TTUR, spectrogram per style x3": [
    *NS_R1,
    *TTUR,
    *SPECTROGRAM,
    "optim.stft_weight=3",
  ],
  "NS + R1, n_critic 1 + TTUR, AC-GAN, Adam b1 0": [
    *NS_R1,
    *TTUR,
    "model.d_cond=acgan",
    "optim.b1=0",
    "optim.b2=0.99",
  ],
  **{f"demo recipe, {k}": [*DEMO, *v] for k, v in STRUCTURES.items()},
  **{
    f"NS + R1, n_critic 1 + TTUR, spectrum per style, {k}": [*SPEECH, *v]
    for k, v in STRUCTURES.items()
  },
  # The spectral kinds with the best recipe that applies to them (the spectral losses are the
  # waveform model's).
  **{f"NS + R1, n_critic 1 + TTUR, {k}": [*NS_R1, *TTUR, f"model.kind={k}"] for k in SPECTRAL},
}


def slug(name: str) -> str:
  out = "".join(c if c.isalnum() else "-" for c in name)
  while "--" in out:
    out = out.replace("--", "-")
  return out.strip("-")


def wavegan(*args: str) -> None:
  print("$ wavegan " + " ".join(args), flush=True)
  subprocess.run([sys.executable, "-m", "wavegan.cli", *args], check=True)


def run_variant(name: str, args: argparse.Namespace) -> str:
  """Trains and evaluates one variant unless OUT already has its report; its run folder."""
  run = os.path.join(args.out, slug(name))
  if os.path.exists(os.path.join(run, "eval", "report.json")):
    return run
  budget = (
    [f"train.steps={args.steps}"]
    if args.steps
    else [f"train.max_cpu_minutes={args.cpu_minutes}", "train.steps=1000000"]
  )
  sets = [
    *budget,
    "train.checkpoint_every=200",
    *BASE,
    *VARIANTS[name],
  ]
  data = ["--data", args.data] if args.data else []
  train = ["train", "--preset", "demo", "--workdir", run, "--no-progress", *data]
  wavegan(*train, *[a for s in sets for a in ("--set", s)])
  wavegan("evaluate", "--workdir", run, "--n", str(args.n), "--out", os.path.join(run, "eval"))
  return run


def curve(run: str) -> list[dict[str, float]]:
  """The light evaluations of a run: [{"cpu_minutes", "step", "fd", "style_acc"}]."""
  points = []
  with open(os.path.join(run, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if "eval/fd" in r and "cpu_minutes" in r:
        points.append(
          {
            "cpu_minutes": r["cpu_minutes"],
            "step": r["step"],
            "fd": r["eval/fd"],
            "style_acc": r.get("eval/style_acc", math.nan),
          }
        )
  return points


def _f(x: Any, spec: str) -> str:
  return format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def row(name: str, report: dict[str, Any]) -> str:
  """The variant's line of the results table."""
  g, real = report["generated"], report["real_held_out"]
  nn = g.get("nn_distance", math.nan) / max(real.get("nn_distance", math.nan), 1e-12)
  hard = report.get("hardened", {}).get("generated", {})
  tones = report.get("upsampling_artefacts", {}).get("generated")
  tones = sum(tones) / len(tones) if tones else math.nan
  shape = report.get("spectrum", {}).get("generated", math.nan)
  return (
    f"| {name} | {report['step']} | {_f(g.get('style_accuracy'), '.3f')} | "
    f"{_f(g.get('fd'), '.1f')} | {_f(g.get('kid'), '.2f')} | {_f(g.get('ndb_over_k'), '.2f')} | "
    f"{_f(nn, '.2f')}x | {_f(hard.get('style_accuracy'), '.3f')} | "
    f"{_f(hard.get('accepted_style_accuracy'), '.3f')} | "
    f"{_f(hard.get('fd'), '.1f')} | {_f(tones, '.1f')} | {_f(shape, '.1f')} | "
    f"{attack(report)} |"
  )


def attack(report: dict[str, Any]) -> str:
  """The generated clips' median attack rise time (ms) against the real clips': kick and snare
  where the corpus has them, else the median over the styles."""
  rise = report.get("attack", {}).get("rise_ms", {})
  gen, real = rise.get("generated", {}), rise.get("real_held_out", {})
  if not gen:
    return "-"
  if {"kick", "snare"} <= set(gen):
    return " / ".join(f"{_f(gen[s], '.1f')} ({_f(real.get(s), '.1f')})" for s in ("kick", "snare"))
  med = lambda d: float(np.nanmedian(list(d.values()))) if d else math.nan  # noqa: E731
  return f"{_f(med(gen), '.1f')} ({_f(med(real), '.1f')})"


def plot(curves: dict[str, list[dict[str, float]]], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (ax_fd, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name, points in curves.items():
    x = [p["cpu_minutes"] for p in points]
    ax_fd.plot(x, [p["fd"] for p in points], marker=".", label=name)
    ax_acc.plot(x, [p["style_acc"] for p in points], marker=".", label=name)
  ax_fd.set(xlabel="training CPU minutes", ylabel="Frechet distance (lower is better)", title=title)
  ax_fd.set_yscale("log")
  ax_acc.set(xlabel="training CPU minutes", ylabel="style accuracy", title=title, ylim=(0, 1))
  ax_acc.legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--cpu-minutes", type=float, default=16.0)
  p.add_argument("--steps", type=int, default=0, help="N generator steps each, not CPU minutes")
  p.add_argument("--data", default="", help="audio folder (default: the built-in corpus)")
  p.add_argument("--n", type=int, default=600, help="generated clips per evaluation")
  p.add_argument("--out", default="runs/recipes/builtin")
  p.add_argument("--only", nargs="+", help="variant names to run (default: all)")
  p.add_argument("--table", action="store_true", help="run nothing: tabulate what OUT holds")
  args = p.parse_args()
  unknown = set(args.only or ()) - set(VARIANTS)
  if unknown:
    p.error(f"unknown variants {sorted(unknown)}; valid: {list(VARIANTS)}")
  names = [] if args.table else [n for n in VARIANTS if not args.only or n in args.only]
  for name in names:
    run_variant(name, args)
  rows, curves = [], {}
  for name in VARIANTS:  # every variant evaluated so far, in table order
    run = os.path.join(args.out, slug(name))
    report_path = os.path.join(run, "eval", "report.json")
    if not os.path.exists(report_path):
      continue
    with open(report_path) as f:
      rows.append(row(name, json.load(f)))
    curves[name] = curve(run)
  corpus = os.path.basename(os.path.normpath(args.data)) if args.data else "built-in corpus"
  budget = f"{args.steps} steps" if args.steps else f"{args.cpu_minutes:g} training CPU minutes"
  lines = [
    f"{corpus}, {budget} each, `wavegan evaluate --n {args.n}`.",
    "",
    "| variant | steps | style accuracy | FD | KID | NDB/K | NN distance / real's "
    "| hardened style accuracy | accepted style accuracy | hardened FD | upsampling tones (dB) "
    "| spectral shape distance (dB) | attack rise, generated (real) (ms) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    *rows,
    "",
    "Light evaluations (FD / style accuracy) at training CPU minutes:",
    "",
  ]
  for name, points in curves.items():
    cells = ", ".join(
      f"{q['cpu_minutes']:.1f}: {q['fd']:.1f} / {q['style_acc']:.2f}" for q in points
    )
    lines.append(f"- {name}: {cells}")
  table = "\n".join(lines)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(table + "\n")
  if curves:
    plot(curves, os.path.join(args.out, "curves.png"), corpus)


if __name__ == "__main__":
  main()
