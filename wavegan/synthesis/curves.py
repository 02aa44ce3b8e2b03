"""A run's curves: metrics.jsonl read and drawn to a PNG (`wavegan plot`, the audition pages)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from wavegan.synthesis.previews import save_png

# Keys of a metrics record that are bookkeeping, not curves.
_NOT_CURVES = ("step", "time")
_THROUGHPUT = "steps_per_s"


def as_float(value) -> float | None:
  """A numeric scalar (Python, NumPy or JAX) as a float; None for anything else (strings, bools)."""
  if value is None or isinstance(value, (bool, str, bytes)):
    return None
  try:
    arr = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything that is not array-like is simply not a scalar
    return None
  if arr.size != 1 or arr.dtype.kind not in "iuf":
    return None
  return float(arr.reshape(()))


def read_metrics(path: str) -> list[dict]:
  """Reads a metrics.jsonl; skips blank and malformed lines (a killed run can leave half a line)."""
  records = []
  # errors="replace": a line cut inside a multi-byte character must not abort the whole read.
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict):
        records.append(record)
  return records


def _series(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per key, the (steps, values) of its finite numeric values, sorted by step.

  A step logged twice (a run killed after its last checkpoint, then resumed) keeps the later
  value, which is what the resumed run computed.
  """
  by_key: dict[str, dict[int, float]] = {}
  for record in records:
    step = as_float(record.get("step"))
    if step is None:
      continue
    for key, value in record.items():
      number = as_float(value)
      if key in _NOT_CURVES or number is None or not math.isfinite(number):
        continue
      by_key.setdefault(key, {})[int(step)] = number
  out = {}
  for key, points in by_key.items():
    steps = np.array(sorted(points))
    out[key] = (steps, np.array([points[s] for s in steps]))
  return out


def _smooth(values: np.ndarray) -> np.ndarray | None:
  """A moving average for noisy training curves; None when there are too few points to matter."""
  window = len(values) // 50
  if window < 3:
    return None
  kernel = np.ones(window) / window
  # "valid" would shorten the curve; pad with edge values so it lines up with the steps.
  padded = np.pad(values, (window // 2, window - 1 - window // 2), mode="edge")
  return np.convolve(padded, kernel, mode="valid")


def _draw(
  ax, series: dict[str, tuple[np.ndarray, np.ndarray]], keys: list[str], title: str, smooth: bool
) -> None:
  """Draws `keys` on one axis against step; a log y scale when positive values span decades."""
  for key in keys:
    steps, values = series[key]
    smoothed = _smooth(values) if smooth else None
    marker = "o" if len(steps) <= 30 else None  # sparse curves (evals) need visible points
    if smoothed is None:
      ax.plot(steps, values, label=key, marker=marker, markersize=3)
    else:
      (line,) = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
      ax.plot(steps, smoothed, color=line.get_color(), label=key)
  values = np.concatenate([series[k][1] for k in keys])
  if values.min() > 0 and values.max() / values.min() > 30:
    ax.set_yscale("log")
  ax.set_title(title, fontsize=10)
  ax.set_xlabel("step", fontsize=8)
  ax.tick_params(labelsize=8)
  ax.grid(True, alpha=0.3)
  if len(keys) > 1:
    ax.legend(fontsize=7)


def _panels(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[str, list[str], bool]]:
  """Groups the curves into (title, keys, smooth) panels: losses, diagnostics, speed, each eval."""
  keys = sorted(series)
  evals = [k for k in keys if k.startswith("eval/")]
  train = [k for k in keys if k not in evals]
  losses = [k for k in train if k.endswith("/loss")]
  # Throughput gets its own panel: its scale and meaning have nothing to do with the model's.
  others = [k for k in train if k not in losses and k != _THROUGHPUT]
  panels = []
  if losses:
    panels.append(("losses", losses, True))
  if others:
    panels.append(("training diagnostics", others, True))
  if _THROUGHPUT in series:
    panels.append(("steps per second", [_THROUGHPUT], True))
  panels += [(k, [k], False) for k in evals]  # evals are sparse and already averaged
  return panels


def plot_run(workdir: str, out: str | None = None) -> str:
  """Draws a run's metrics.jsonl curves against step to a PNG.

  Args:
    workdir: the run folder holding metrics.jsonl.
    out: the PNG path; defaults to `workdir/curves.png`.

  Returns:
    The PNG path.

  Raises:
    FileNotFoundError: `workdir` has no metrics.jsonl.
    ValueError: metrics.jsonl holds no records with a step and a numeric value.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no metrics to plot: {path} does not exist")
  series = _series(read_metrics(path))
  if not series:
    raise ValueError(f"no metrics to plot: {path} has no records with a step and a numeric value")

  import matplotlib

  matplotlib.use("Agg")  # headless: runs are often watched over ssh
  import matplotlib.pyplot as plt

  panels = _panels(series)
  n_cols = 1 if len(panels) == 1 else 2
  n_rows = math.ceil(len(panels) / n_cols)
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(6 * n_cols, 3.2 * n_rows), squeeze=False)
  flat = axes.ravel()
  for ax, (title, keys, smooth) in zip(flat, panels):
    _draw(ax, series, keys, title, smooth)
  for ax in flat[len(panels) :]:
    ax.set_visible(False)
  name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  fig.suptitle(f"{name} (last step {max(int(s[-1]) for s, _ in series.values())})", fontsize=11)
  fig.tight_layout()
  out = out or os.path.join(workdir, "curves.png")
  try:
    return save_png(fig, out, dpi=100)
  finally:
    plt.close(fig)
