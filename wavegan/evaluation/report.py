"""`wavegan evaluate`: score a run's generator and write report.json, report.md and pictures."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from wavegan import inputs
from wavegan.config import ConfigError
from wavegan.evaluation import metrics, scores
from wavegan.files import write_json, write_text
from wavegan.synthesis import pages, previews

if TYPE_CHECKING:
  from wavegan.run import RunInfo


def evaluate_run(
  workdir: str,
  *,
  data: str | None = None,
  n: int = 1000,
  out: str | None = None,
  seed: int = 0,
  hardened: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Scores the latest checkpoint of `workdir` against its corpus and writes the report.

  Today's judge (the reference classifier) is reported as it always was; beside it stand the
  hardened judge (`scores.hardened_reference`: a second, augmented and calibrated classifier with
  a reject test) and the upsampling-artefact peakiness of every set.

  Any rate and slice length: the real clips are read at the run's rate (an audio folder is
  resampled to it; a prepared cache must hold it) and length, and every measure is taken at that
  rate (the classifiers are trained per corpus and rate, see `scores.reference`).

  Nothing is written (not even the report folder) until every figure is computed; then the
  pictures, report.html (the audition page: every style's clips to play), report.md and, last,
  report.json are each written whole or not at all.

  Args:
    workdir: a training run folder.
    data: the corpus (folder or cache) when not the run's own `data.path`.
    n: generated clips (spread evenly over the styles).
    out: report folder (default `RUN/eval/step_NNNNNNN`).
    seed: latent seed of the generated clips.
    hardened: train (or load) and report the hardened judge (corpora with several styles).
    log: progress lines.

  Returns:
    The report, as computed: a figure that could not be computed is NaN here and null in
    `out/report.json`.

  Raises:
    ConfigError: `workdir` holds no run, or the data does not fit it (another slice length, or a
      prepared cache at another rate).
    DiskFullError: the disk filled up while writing (no half-written file is left).
  """
  from wavegan.synthesis.synthesizer import Synthesizer  # pylint: disable=g-import-not-at-top

  if n < 2:
    raise ConfigError(f"--n {n}: must be >= 2")
  run = _saved_run(workdir)
  cfg = run.config
  if data is not None:
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=os.path.abspath(data)))
  data_cfg, train_data = inputs.load_data(cfg, log=log)
  if data_cfg.data.sample_rate != cfg.data.sample_rate:  # a prepared cache keeps its own rate
    raise ConfigError(
      f"{train_data.cache.path} holds clips at {data_cfg.data.sample_rate} Hz but {workdir} was "
      f"trained at {cfg.data.sample_rate} Hz; pass its audio folder (resampled to the run's rate)"
    )
  if cfg.model.conditional and train_data.styles != run.styles:
    raise ConfigError(
      f"{workdir} was trained on styles {list(run.styles)} but the data has "
      f"{list(train_data.styles)}"
    )
  ref = scores.reference(train_data, cfg.data.label_field, scores.classifier_config(cfg), log=log)
  synth = Synthesizer.from_workdir(workdir)
  out = out or os.path.join(workdir, "eval", f"step_{synth.info['step']:07d}")

  styles = ref.styles if ref.conditional else ()
  ids = (np.arange(n) % len(styles)).astype(np.int32) if styles else None
  log(f"generating {n} clips")
  fake = synth.from_latents(synth.latents(n, seed=seed), ids)
  real = train_data.cache.gather(ref.test_idx)
  noise = scores.noise_clips(n, fake.shape[1:], seed=seed)
  log("scoring generated clips, held-out real clips and noise")
  report = {
    "run": os.path.abspath(workdir),
    "step": synth.info["step"],
    "n": n,
    "seed": seed,
    "styles": list(ref.styles),
    "classifier": {
      "kind": "cnn on log-mel" if ref.conditional else "log-mel statistics",
      "held_out_accuracy": ref.classifier.held_out_accuracy,
      "train_clips": int(ref.train_idx.size),
      "held_out_clips": int(ref.test_idx.size),
      **ref.classifier.info,
    },
    "generated": scores.score_set(ref, fake, ids, seed=seed),
    "real_held_out": scores.score_set(
      ref,
      real,
      ref.test_labels if styles else None,
      probs=ref.test_probs,
      emb=ref.test_emb,
      seed=seed,
    ),
    "noise": scores.score_set(ref, noise, ids, seed=seed),
  }
  report["upsampling_artefacts"] = artefact_report(
    {"generated": fake, "real_held_out": real, "noise": noise},
    synth.sample_rate,
    upsampling_periods(synth.model),
  )
  report["spectrum"] = spectrum_report(
    {
      "generated": (fake, ids),
      "real_held_out": (real, ref.test_labels if styles else None),
      "noise": (noise, ids),
    },
    train_data.cache.gather(ref.train_idx),
    train_data.labels[ref.train_idx] if styles else None,
  )
  report["attack"] = attack_report(
    {
      "generated": (fake, ids),
      "real_held_out": (real, ref.test_labels if styles else None),
    },
    styles,
    synth.sample_rate,
  )
  hard = (
    scores.hardened_reference(
      train_data, ref, cfg.data.label_field, scores.classifier_config(cfg), log=log
    )
    if hardened
    else None
  )
  if hard is not None:
    log("scoring the same sets with the hardened judge")
    report["hardened"] = {
      "classifier": scores.hardened_summary(hard, ref),
      "generated": scores.score_hardened(ref, hard, fake, ids, seed=seed),
      "real_held_out": scores.score_hardened_real(ref, hard, real),
      "noise": scores.score_hardened(ref, hard, noise, ids, seed=seed),
    }
  responses = attribute_responses(synth, train_data, n, seed, log)
  if responses:
    report["attributes"] = responses
  rows = audition_rows(fake, ids, real, ref)
  _pictures(out, rows, synth.sample_rate, report)
  write_audition_page(out, workdir, rows, synth.sample_rate, report)
  write_report(out, report)
  return report


def _saved_run(workdir: str) -> RunInfo:
  """The run recorded in `workdir`, read without writing anything there.

  Raises:
    ConfigError: `workdir` is missing or holds no run.
  """
  from wavegan.run import saved_run  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(workdir):
    raise ConfigError(f"{workdir}: no such run folder")
  run = saved_run(workdir)  # opens no checkpoint folder that does not exist
  if run is None:
    raise ConfigError(
      f"{workdir}: holds no run (no checkpoint; train one with `wavegan train --workdir`)"
    )
  return run


def write_report(out: str, report: dict[str, Any]) -> None:
  """Writes report.md, then report.json (last: when it is there, the report is whole), with
  figures that could not be computed (NaN) as null: strict JSON has no NaN.

  Raises:
    DiskFullError: the disk filled up; the file being written was not left behind.
  """
  on_disk = scores.json_safe(report)
  write_text(os.path.join(out, "report.md"), markdown(on_disk))
  write_json(os.path.join(out, "report.json"), on_disk)


QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)


def upsampling_periods(model) -> tuple[int, ...]:
  """The periods (output samples) of the generator's upsampling grid, shortest first: the
  cumulative strides of `wavegan.models.waveform.layer_plan` from the output end."""
  from wavegan.models.waveform import layer_plan  # pylint: disable=g-import-not-at-top

  return metrics.upsampling_periods(layer_plan(model)[2])


def artefact_report(
  sets: dict[str, np.ndarray], sample_rate: int, periods: tuple[int, ...]
) -> dict[str, Any]:
  """`metrics.upsampling_artefacts` of each set of clips [N, T, C]: {"periods", "hz" (the first
  harmonic of each), "sample_rate", and per set a list of dB aligned with the periods}."""
  out: dict[str, Any] = {
    "periods": list(periods),
    "hz": [sample_rate / p for p in periods],
    "sample_rate": sample_rate,
  }
  for name, audio in sets.items():
    values = metrics.upsampling_artefacts(audio, sample_rate, periods)
    out[name] = [values[p] for p in periods]
  return out


SPECTRUM_FFT = 512


def spectrum_report(
  sets: dict[str, tuple[np.ndarray, np.ndarray | None]],
  train: np.ndarray,
  train_labels: np.ndarray | None,
) -> dict[str, Any]:
  """`metrics.spectrum_distance_by_style` of each set (clips [N, T, C], style ids or None) to the
  real training clips: {"n_fft", and per set its dB}."""
  out: dict[str, Any] = {"n_fft": SPECTRUM_FFT}
  for name, (audio, labels) in sets.items():
    out[name] = metrics.spectrum_distance_by_style(
      audio, labels, train, train_labels, n_fft=SPECTRUM_FFT
    )
  return out


def attack_report(
  sets: dict[str, tuple[np.ndarray, np.ndarray | None]],
  styles: tuple[str, ...] | list[str],
  sample_rate: int,
) -> dict[str, Any]:
  """How sharp each set's attacks are, per style (median over the style's clips): {"rise_ms":
  {set: {style: ms}}, "onset_flux_db": {set: {style: dB}}}; style "all" without styles."""
  out: dict[str, Any] = {"rise_ms": {}, "onset_flux_db": {}}
  for name, (audio, labels) in sets.items():
    groups = (
      {s: labels == k for k, s in enumerate(styles)}
      if styles and labels is not None
      else {"all": np.ones(len(audio), bool)}
    )
    for key, measure in (
      ("rise_ms", metrics.rise_time_ms),
      ("onset_flux_db", metrics.onset_flux_db),
    ):
      values = measure(audio, sample_rate)
      out[key][name] = {
        s: float(np.nanmedian(values[m])) if np.isfinite(values[m]).any() else math.nan
        for s, m in groups.items()
      }
  return out


def attribute_responses(
  synth, train_data, n: int, seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
  """`scores.attribute_response` for each measurable attribute the run is conditioned on,
  asking for the corpus' 10/30/50/70/90 % quantiles."""
  from data_pipelines import features  # pylint: disable=g-import-not-at-top

  out = {}
  c = synth.conditioning
  styles = max(len(c.fields[0][1]) if c.fields else 1, 1)
  for i, a in enumerate(c.attributes):
    if a.name not in features.ATTRIBUTES or train_data.attribute_values is None:
      continue
    raw = train_data.attribute_values[:, i]
    raw = raw[np.isfinite(raw) & (raw > 0)]
    if raw.size < 2:
      continue
    asked = np.quantile(raw, QUANTILES)
    per_style = int(np.clip(n // (styles * len(QUANTILES)), 4, 32))
    log(
      f"measuring the {a.name} response ({per_style} latents x {styles} styles x {len(asked)} values)"
    )
    out[a.name] = scores.attribute_response(synth, a.name, asked, per_style=per_style, seed=seed)
  return out


def _fmt(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def markdown(report: dict[str, Any]) -> str:
  """The report as a Markdown table: one row per metric, one column per set."""
  sets = ("generated", "real_held_out", "noise")
  lines = [
    f"# Evaluation of {report['run']} at step {report['step']}",
    "",
    f"{report['n']} generated clips (seed {report['seed']}) against the real training split; "
    f"reference classifier: {report['classifier']['kind']}, held-out accuracy "
    f"{_fmt(report['classifier']['held_out_accuracy'])}.",
    "",
    "| metric | better | generated | real held-out | noise |",
    "| --- | --- | --- | --- | --- |",
  ]
  for key, (label, better) in scores.METRICS.items():
    if key not in report["generated"]:
      continue
    lines.append(
      f"| {label} | {better} | " + " | ".join(_fmt(report[s].get(key)) for s in sets) + " |"
    )
  gen_nn, real_nn = report["generated"]["nn_distance"], report["real_held_out"]["nn_distance"]
  ratio = (
    f"{gen_nn / max(real_nn, 1e-12):.2f}x"
    if _is_number(gen_nn) and _is_number(real_nn)
    else "(not computed)"
  )
  lines += [
    "",
    f"Memorisation check: generated clips are on average {ratio} "
    "as far from their nearest training clip as held-out real clips are "
    "(well below 1 suggests copying).",
  ]
  for name, r in report.get("attributes", {}).items():
    lines += [
      "",
      f"Attribute {name}: asked (corpus quantiles) against measured medians; Spearman "
      f"rho {_fmt(r['spearman'])} over the {_fmt(r['measured_share'])} share of clips "
      "where it could be measured.",
      "",
      "| style | " + " | ".join(f"asked {v:.4g}" for v in r["asked"]) + " |",
      "| --- | " + " | ".join("---" for _ in r["asked"]) + " |",
    ]
    lines += [
      f"| {s or 'all'} | " + " | ".join(_fmt(m) for m in row) + " |"
      for s, row in zip(r["styles"], r["median"])
    ]
  per = report["generated"].get("style_accuracy_per_style")
  if per:
    real_per = report["real_held_out"].get("style_accuracy_per_style", {})
    lines += ["", "| style | generated accuracy | real held-out accuracy |", "| --- | --- | --- |"]
    lines += [f"| {s} | {_fmt(per[s])} | {_fmt(real_per.get(s))} |" for s in per]
  lines += _hardened_markdown(report.get("hardened"), sets)
  lines += _artefact_markdown(report.get("upsampling_artefacts"), sets)
  lines += _spectrum_markdown(report.get("spectrum"), sets)
  lines += _attack_markdown(report.get("attack"))
  return "\n".join(lines) + "\n"


def _attack_markdown(attack: dict[str, Any] | None) -> list[str]:
  """The attack table: per style, rise time and onset flux of the generated and real clips."""
  if not attack:
    return []
  rise, flux = attack["rise_ms"], attack["onset_flux_db"]
  lines = [
    "",
    "## Attack",
    "",
    "Medians per style: the RMS envelope's rise from 10 % to 90 % of its peak (ms; real drums "
    "about 1 ms, smeared attacks longer) and the largest frame-to-frame rise of the spectrum "
    "(dB, averaged over bins).",
    "",
    "| style | generated rise (ms) | real rise (ms) | generated onset flux (dB) | real onset flux "
    "(dB) |",
    "| --- | --- | --- | --- | --- |",
  ]
  for style in rise.get("generated", {}):
    cells = (
      rise["generated"][style],
      rise.get("real_held_out", {}).get(style),
      flux["generated"][style],
      flux.get("real_held_out", {}).get(style),
    )
    lines.append(f"| {style} | " + " | ".join(_fmt(c) for c in cells) + " |")
  return lines


def _spectrum_markdown(spec: dict[str, Any] | None, sets: tuple[str, ...]) -> list[str]:
  """The spectral-shape distance row (nothing when absent)."""
  if not spec:
    return []
  row = [_fmt(spec[s]) if s in spec else "-" for s in sets]
  return [
    "",
    "## Spectral shape",
    "",
    "RMS difference (dB) of the average spectrum's shape to the real training clips' (per "
    "style, averaged; no learned model: a band real clips leave empty counts wherever the clips "
    "fill it).",
    "",
    "| | generated | real held-out | noise |",
    "| --- | --- | --- | --- |",
    "| spectral shape distance (dB) | " + " | ".join(row) + " |",
  ]


def _hardened_markdown(hard: dict[str, Any] | None, sets: tuple[str, ...]) -> list[str]:
  """The hardened judge's table and its per-style accepted accuracy (nothing when absent)."""
  if not hard:
    return []
  c = hard["classifier"]
  lines = [
    "",
    "## Hardened judge",
    "",
    "A second classifier (seed "
    f"{c.get('seed')}, augmented training; held-out accuracy {_fmt(c.get('held_out_accuracy'))}, "
    f"temperature {_fmt(c.get('temperature'))}"
    + (
      ", at its search bound: the held-out clips do not pin it down (all classified right, "
      "say), so the calibrated confidence says little"
      if c.get("temperature_at_bound")
      else ""
    )
    + "). A clip is accepted for its style when this "
    "classifier predicts the style and its embedding is no farther from the nearest real "
    f"training clip of the style than the {_fmt(c.get('accept_quantile'))} quantile of real "
    "held-out clips' distances (real held-out clips are scored with themselves left out).",
    "",
    "| metric | better | generated | real held-out | noise |",
    "| --- | --- | --- | --- | --- |",
  ]
  for key, (label, better) in scores.HARDENED_METRICS.items():
    if key in hard.get("generated", {}):
      lines.append(
        f"| {label} | {better} | " + " | ".join(_fmt(hard.get(s, {}).get(key)) for s in sets) + " |"
      )
  per = hard.get("generated", {}).get("accepted_style_accuracy_per_style")
  if per:
    real_per = hard.get("real_held_out", {}).get("accepted_style_accuracy_per_style", {})
    lines += [
      "",
      "| style | generated accepted accuracy | real held-out accepted accuracy |",
      "| --- | --- | --- |",
    ]
    lines += [f"| {s} | {_fmt(per[s])} | {_fmt(real_per.get(s))} |" for s in per]
  return lines


def _artefact_markdown(art: dict[str, Any] | None, sets: tuple[str, ...]) -> list[str]:
  """The upsampling-artefact table: one row per period (nothing when absent)."""
  if not art:
    return []
  lines = [
    "",
    "## Upsampling artefacts",
    "",
    "Spectral peakiness (dB) at the harmonics of sample_rate / period, against the median of "
    "neighbouring bins: about 0 for a smooth spectrum, high where the generator's upsampling "
    "grid leaves tones.",
    "",
    "| period (samples) | first harmonic (Hz) | generated | real held-out | noise |",
    "| --- | --- | --- | --- | --- |",
  ]
  for i, (p, hz) in enumerate(zip(art["periods"], art["hz"])):
    row = [_fmt(art[s][i]) if s in art else "-" for s in sets]
    lines.append(f"| {p} | {_fmt(hz)} | " + " | ".join(row) + " |")
  return lines


PER_ROW = 4  # clips per row of the spectrogram grid and the audition page


def audition_rows(
  fake: np.ndarray, ids: np.ndarray | None, real: np.ndarray, ref: scores.Reference
) -> list[pages.ClipRow]:
  """Per style (or "all"), `PER_ROW` generated clips, then `PER_ROW` held-out real clips (fewer
  clips repeat); a set with no clip of a style has no row."""
  rows = []
  groups = list(enumerate(ref.styles)) if ref.conditional else [(None, "all")]
  for i, name in groups:
    g = fake[ids == i] if i is not None else fake
    r = real[ref.test_labels == i] if i is not None else real
    for label, x in ((f"{name}: generated", g), (f"{name}: real", r)):
      if x.shape[0] == 0:
        continue
      rows.append(pages.ClipRow(label, x[np.arange(PER_ROW) % x.shape[0]]))
  return rows


def write_audition_page(
  out: str, workdir: str, rows: list[pages.ClipRow], sample_rate: int, report: dict[str, Any]
) -> str:
  """report.html: the clips of `rows` to play, the report's tables (generated against real
  held-out clips and noise), the per-style accuracy and the run's curves (also written as
  curves.png), in one self-contained file."""
  from wavegan.synthesis.curves import plot_run  # pylint: disable=g-import-not-at-top

  images = []
  accuracy = os.path.join(out, "style_accuracy.png")
  if os.path.exists(accuracy):
    images.append(("style accuracy per style", _read_bytes(accuracy)))
  try:
    images.append(
      ("training curves", _read_bytes(plot_run(workdir, os.path.join(out, "curves.png"))))
    )
  except (FileNotFoundError, ValueError):
    pass  # a run without metrics.jsonl has no curves
  tables = markdown(scores.json_safe(report)).split("\n", 1)[1]  # its title is the page's
  page = pages.audition_page(
    f"Evaluation of {os.path.basename(os.path.normpath(report['run']))} at step {report['step']}",
    rows,
    sample_rate,
    intro=f"{report['n']} generated clips (seed {report['seed']}); {PER_ROW} of each style "
    "are here, beside held-out real clips of the same style.",
    sections=[("metrics", pages.markdown_html(tables))],
    images=images,
  )
  path = os.path.join(out, "report.html")
  write_text(path, page)
  return path


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _pictures(
  out: str, rows: list[pages.ClipRow], sample_rate: int, report: dict[str, Any]
) -> None:
  """spectrograms.png (the audition rows) and style_accuracy.png."""
  previews.spectrogram_grid(
    np.concatenate([r.clips for r in rows]),
    [r.label for r in rows],
    os.path.join(out, "spectrograms.png"),
    sample_rate,
    title=f"step {report['step']}: generated vs real",
  )
  per = report["generated"].get("style_accuracy_per_style")
  if not per:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(per)
  real_per = report["real_held_out"]["style_accuracy_per_style"]
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.2))
  ax.bar(x - 0.2, [per[s] or 0 for s in names], 0.4, label="generated")
  ax.bar(x + 0.2, [real_per.get(s) or 0 for s in names], 0.4, label="real held-out")
  ax.axhline(1 / len(names), color="gray", ls="--", lw=1, label="chance")
  ax.set_xticks(x, names)
  ax.set_ylim(0, 1)
  ax.set_ylabel("style accuracy")
  ax.legend(fontsize=8)
  ax.set_title(f"step {report['step']}")
  fig.tight_layout()
  try:
    previews.save_png(fig, os.path.join(out, "style_accuracy.png"), dpi=90)
  finally:
    plt.close(fig)
