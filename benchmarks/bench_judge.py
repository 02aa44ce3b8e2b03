"""Does the judge fall for known-bad audio? Today's judge against the hardened one, on the built-in
corpus.

    python benchmarks/bench_judge.py --out judge_out              # the demo preset's corpus
    python benchmarks/bench_judge.py --out judge_out --per-class 32

Both judges are those `wavegan evaluate` uses (the reference classifier with the demo preset's
settings, cached per corpus, and `scores.hardened_reference`), trained once and then read from the
corpus cache. Every set has as many clips as the held-out split and is scored against the real
training split:

  real: STYLE            the held-out real clips of one style (what a perfect generator scores)
  white noise            `scores.noise_clips`, asked-for styles spread evenly
  real + 62.5 Hz pulses  the held-out clips plus a 62.5 Hz (16000 / 256) pulse train at -6 dB
                         (strong) and -20 dB (faint) to each clip's RMS: the tones transposed
                         convolutions leave
  62.5 Hz harmonics      sums of the first 16 harmonics of 62.5 Hz, nothing else
  wrong style            held-out clips of style A asked for as the next style
  untrained generator    the demo preset's generator as built (EMA parameters), rendered

The table (stdout, and judge.md / judge.json in --out) gives per set today's style accuracy and
Frechet distance, then the hardened judge's style accuracy, accepted style accuracy (right style
AND near a real clip of it), agreement of the two classifiers and Frechet distance, and the
upsampling-artefact peakiness at period 256. The check: every known-bad set's accepted style
accuracy lies below that of the real clips of every style.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PULSE_PERIOD = 256  # samples: 62.5 Hz at 16 kHz
PULSE_DBS = (-6.0, -20.0)  # pulse train RMS relative to each clip's RMS: strong, then faint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="folder for judge.md and judge.json")
  p.add_argument("--per-class", type=int, default=0, help="built-in clips per style (0: demo's)")
  p.add_argument("--quantile", type=float, default=0.95, help="the reject test's quantile")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def _err(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def pulse_train(n: int, t: int, period: int) -> np.ndarray:
  """Unit impulses every `period` samples [n, t, 1]."""
  x = np.zeros((n, t, 1), np.float32)
  x[:, ::period] = 1.0
  return x


def with_pulses(real: np.ndarray, period: int, db: float) -> np.ndarray:
  """Clips [N, T, C] plus a pulse train at `db` to each clip's RMS, peak-limited to 0.95."""
  pulses = pulse_train(real.shape[0], real.shape[1], period)
  rms = np.sqrt(np.mean(real**2, axis=(1, 2), keepdims=True))
  prms = np.sqrt(np.mean(pulses**2, axis=(1, 2), keepdims=True))
  mixed = real + pulses * (rms / prms) * 10.0 ** (db / 20.0)
  peak = np.max(np.abs(mixed), axis=(1, 2), keepdims=True)
  return (mixed * np.minimum(1.0, 0.95 / np.maximum(peak, 1e-12))).astype(np.float32)


def harmonics(n: int, t: int, sample_rate: int, period: int, seed: int) -> np.ndarray:
  """Sums of the first 16 harmonics of sample_rate / period, 1/k amplitudes, random phases,
  peak 0.5 [n, t, 1]."""
  rng = np.random.default_rng(seed)
  time_s = np.arange(t) / sample_rate
  f0 = sample_rate / period
  x = np.zeros((n, t))
  for k in range(1, 17):
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x += np.sin(2 * np.pi * k * f0 * time_s[None, :] + phase) / k
  x *= 0.5 / np.max(np.abs(x), axis=1, keepdims=True)
  return x[..., None].astype(np.float32)


def untrained_generator(cfg, data, n: int, ids: np.ndarray, seed: int) -> np.ndarray:
  """The config's generator as built (EMA parameters), rendered for styles `ids` [n, T, C]."""
  from wavegan.synthesis.synthesizer import Synthesizer
  from wavegan.training import loop, step

  cfg = loop.with_styles(cfg, data.styles, data.conditioning)
  _, state = step.build(cfg)
  synth = Synthesizer(cfg.model, data.styles, cfg.data.sample_rate, state.ema_params)
  return synth.from_latents(synth.latents(n, seed=seed), ids)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  from wavegan import inputs
  from wavegan.evaluation import metrics, scores
  from wavegan.presets import preset

  t0 = time.perf_counter()
  cfg = preset("demo")
  if args.per_class:
    cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, builtin_per_class=args.per_class)
    )
  cfg, data = inputs.load_data(cfg, log=_err)
  ccfg = scores.classifier_config(cfg)
  ref = scores.reference(data, cfg.data.label_field, ccfg, log=_err)
  hard = scores.hardened_reference(
    data, ref, cfg.data.label_field, ccfg, quantile=args.quantile, log=_err
  )
  if hard is None:
    raise SystemExit("the corpus has one style: nothing to judge")
  sr = data.cache.sample_rate
  real = data.cache.gather(ref.test_idx)  # [Nh, T, C]
  n, k = real.shape[0], len(ref.styles)
  ids = (np.arange(n) % k).astype(np.int32)
  hard_test = (hard.test_probs, hard.test_emb)

  rows: list[dict[str, Any]] = []

  def add(name, audio, asked, kind, *, base=None, hard_out=None, limits=None):
    base_probs, base_emb = base if base is not None else (None, None)
    probs, emb = hard_out if hard_out is not None else (None, None)
    today = scores.score_set(ref, audio, asked, probs=base_probs, emb=base_emb, seed=args.seed)
    new = scores.score_hardened(
      ref,
      hard,
      audio,
      asked,
      base_probs=base_probs,
      probs=probs,
      emb=emb,
      limits=limits,
      seed=args.seed,
    )
    art = metrics.upsampling_artefacts(audio, sr, (PULSE_PERIOD,))[PULSE_PERIOD]
    rows.append(
      {
        "set": name,
        "kind": kind,
        "clips": int(audio.shape[0]),
        "today_style_accuracy": today["style_accuracy"],
        "today_fd": today["fd"],
        "hardened_style_accuracy": new["style_accuracy"],
        "accepted_style_accuracy": new["accepted_style_accuracy"],
        "agreement": new["agreement"],
        "hardened_fd": new["fd"],
        "calibrated_confidence": new["calibrated_confidence"],
        "peakiness_256_db": art,
      }
    )
    _err(f"scored {name}")

  for i, style in enumerate(ref.styles):
    m = ref.test_labels == i
    add(
      f"real: {style}",
      real[m],
      ref.test_labels[m],
      "real",
      base=(ref.test_probs[m], ref.test_emb[m]),
      hard_out=(hard_test[0][m], hard_test[1][m]),
      limits=hard.test_limits[m],
    )
  add(
    "real: all",
    real,
    ref.test_labels,
    "real",
    base=(ref.test_probs, ref.test_emb),
    hard_out=hard_test,
    limits=hard.test_limits,
  )
  add("white noise", scores.noise_clips(n, real.shape[1:], seed=args.seed), ids, "bad")
  for db in PULSE_DBS:
    add(
      f"real + {sr / PULSE_PERIOD:g} Hz pulses ({db:g} dB)",
      with_pulses(real, PULSE_PERIOD, db),
      ref.test_labels,
      "bad",
    )
  add(
    f"{sr / PULSE_PERIOD:g} Hz harmonics",
    harmonics(n, real.shape[1], sr, PULSE_PERIOD, args.seed),
    ids,
    "bad",
  )
  add("wrong style (A asked as B)", real, (ref.test_labels + 1) % k, "bad")
  add("untrained generator", untrained_generator(cfg, data, n, ids, args.seed), ids, "bad")

  real_rows = [r for r in rows if r["kind"] == "real" and r["set"] != "real: all"]
  floor = min(r["accepted_style_accuracy"] for r in real_rows)
  missed = [r["set"] for r in rows if r["kind"] == "bad" and r["accepted_style_accuracy"] >= floor]
  today_floor = min(r["today_style_accuracy"] for r in real_rows)
  today_missed = [
    r["set"] for r in rows if r["kind"] == "bad" and r["today_style_accuracy"] >= today_floor
  ]
  table = markdown(rows, ref, hard, floor, missed, today_floor, today_missed, args)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "judge.md"), "w") as f:
    f.write(table)
  summary = {
    "rows": rows,
    "reference_held_out_accuracy": ref.classifier.held_out_accuracy,
    "hardened": scores.hardened_summary(hard, ref),
    "real_floor_accepted": floor,
    "missed": missed,
    "today_real_floor": today_floor,
    "today_missed": today_missed,
    "seconds": round(time.perf_counter() - t0, 1),
  }
  with open(os.path.join(args.out, "judge.json"), "w") as f:
    json.dump(scores.json_safe(summary), f, indent=1)
  _err(f"wrote {os.path.join(args.out, 'judge.md')} ({summary['seconds']:.0f} s)")
  return 0 if not missed else 1


def _f(v: Any) -> str:
  return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3g}"


def markdown(rows, ref, hard, floor, missed, today_floor, today_missed, args) -> str:
  from wavegan.evaluation import scores

  lines = [
    "# Today's judge vs the hardened judge on known-bad audio",
    "",
    f"Built-in corpus, {ref.train_idx.size} training and {ref.test_idx.size} held-out clips; "
    f"reference classifier held-out accuracy {_f(ref.classifier.held_out_accuracy)}, hardened "
    f"{_f(hard.classifier.held_out_accuracy)} (temperature {_f(hard.temperature)}"
    f"{', at its search bound' if scores.hardened_summary(hard, ref)['temperature_at_bound'] else ''}"
    "); reject "
    f"test at the {args.quantile:g} quantile of real held-out nearest-real distances (real "
    "clips scored with themselves left out).",
    "",
    "| set | clips | today: style acc | today: FD | hardened: style acc | accepted style acc "
    "| agreement | hardened: FD | calibrated conf. | peakiness @256 (dB) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    lines.append(
      f"| {r['set']} | {r['clips']} | {_f(r['today_style_accuracy'])} | {_f(r['today_fd'])} | "
      f"{_f(r['hardened_style_accuracy'])} | {_f(r['accepted_style_accuracy'])} | "
      f"{_f(r['agreement'])} | {_f(r['hardened_fd'])} | {_f(r['calibrated_confidence'])} | "
      f"{_f(r['peakiness_256_db'])} |"
    )
  lines += [
    "",
    f"Lowest accepted style accuracy of real clips of one style: {_f(floor)}. "
    + (
      "Every known-bad set is accepted less often."
      if not missed
      else f"Known-bad sets NOT below it: {', '.join(missed)}."
    ),
    f"For comparison, today's style accuracy: real floor {_f(today_floor)}; known-bad sets not "
    f"below it: {', '.join(today_missed) or 'none'}.",
  ]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  raise SystemExit(main())
