"""What the training loop does between steps: log, preview, evaluate, save and stop.

`wavegan.training.loop.run_loop` calls each hook, in list order, after every step it is due at,
and after the last step every hook with `at_end`. A hook that returns a reason ends the run after
this step, as if it were the last; one that raises ends it at once. The order that `train` uses:

  StopHook       time budgets; the non-finite check at least every MAX_STEPS_IN_FLIGHT steps
  LogHook        metrics.jsonl, TensorBoard scalars and the progress bar's numbers
  ProgressHook   the progress bar
  PreviewHook    WAVs and a spectrogram grid of fixed latents (Untimed: outside the budget)
  EvalHook       the light evaluation with the reference classifier (Untimed)
  SaveHook       checkpoints
  InterruptHook  Ctrl-C / SIGTERM: save the step just done and stop

Nothing here runs a training step: each hook is given the state and the metrics of a step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wavegan import files
from wavegan.errors import NonFiniteError
from wavegan.run import checkpoint_dir
from wavegan.synthesis import curves, pages, previews
from wavegan.training.step import GANState

Metrics = dict[str, jax.Array]
# (ema params, z [N, latent], style ids [N]) -> audio [N, T, C]
Render = Callable[[Any, jax.Array, Any], jax.Array]

# CPU collectives deadlock when ~50 multi-device steps are queued unsynchronised; wait on the
# device at least this often even when logging is rarer.
MAX_STEPS_IN_FLIGHT = 8
EVAL_CHUNK = 64  # clips per generator call in light evaluations (one compiled shape)


class Hook:
  """Something done after some training steps.

  Attributes:
    every: due after every `every`-th step; 0: never on a schedule.
    at_end: also run after the last step, due or not. A hook without it is not run after the
      last step at all.
  """

  every: int = 1
  at_end: bool = True

  def due(self, step: int) -> bool:
    """Whether to run after `step` (when it is not the last)."""
    return self.every > 0 and step % self.every == 0

  def start(self, step: int, state: GANState) -> None:
    """Called once before the first step, at `step` (0 for a fresh run)."""

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    """Acts on the state and metrics after `step`; returns a reason to stop after it, or None."""
    raise NotImplementedError

  def close(self) -> None:
    """Releases what the hook holds; called once after the loop, in reverse order of the list."""


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  """Appends `record` as one line of JSON to `path`."""
  files.append_line(path, json.dumps(record))


# -- Stopping: time budgets, non-finite steps, Ctrl-C ------------------------------------------


@jax.jit
def first_bad_step(first: jax.Array, step: jax.Array, metrics: Metrics) -> jax.Array:
  """`step` if this step's losses or gradient norms hold a NaN or infinity and no earlier step
  did, else `first` (-1 while every step has been finite). Runs on the device: no sync."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
  return jnp.where((first < 0) & ~finite, step, first)


def check_finite(
  first_bad: jax.Array, metrics: dict[str, Any], last_good: int | None, workdir: str
) -> None:
  """Stops the run, before anything of the bad step is saved, when a step went non-finite.

  Raises:
    NonFiniteError: naming the first bad step, the values and the last good checkpoint.
  """
  bad = int(jax.device_get(first_bad))
  if bad < 0:
    return
  bad_values = [
    f"{k}={float(v):.4g}"
    for k, v in sorted(jax.device_get(metrics).items())
    if not np.isfinite(float(v))
  ]
  values = ", ".join(bad_values[:3]) + (", ..." if len(bad_values) > 3 else "")
  kept = (
    f"the last good checkpoint, step {last_good}, is kept"
    if last_good
    else "no checkpoint was saved"
  )
  raise NonFiniteError(
    f"step {bad}: a loss or gradient is not finite ({values or 'see metrics'}); "
    f"training stopped and {kept} in {checkpoint_dir(workdir)}; lower "
    "optim.g_lr / optim.d_lr or raise optim.eps, then resume"
  )


class FiniteGuard:
  """The first non-finite step, tracked on the device and checked where the host waits anyway.

  Attributes:
    workdir: the run folder (named in the error).
    last_good: the last step checkpointed (None: none yet), named in the error.
    first_bad: int32 [] on the device: the first non-finite step, -1 while there is none.
  """

  def __init__(self, workdir: str, last_good: int | None, sharding: jax.sharding.Sharding):
    self.workdir = workdir
    self.last_good = last_good
    self.first_bad = jax.device_put(jnp.int32(-1), sharding)

  def observe(self, step: int, metrics: Metrics) -> None:
    """Notes whether `step` went non-finite, without waiting on the device."""
    self.first_bad = first_bad_step(self.first_bad, step, metrics)

  def check(self, metrics: Metrics) -> None:
    """Waits on the device; raises NonFiniteError if any step so far went non-finite."""
    check_finite(self.first_bad, metrics, self.last_good, self.workdir)


class Budget:
  """`train.max_minutes` (wall clock) and `train.max_cpu_minutes` (CPU time of this process).

  Only training counts: data preparation and the reference classifier come before the clocks
  start, and previews and evaluations during training are left out (`paused`), so runs given
  equal minutes are compared at equal training compute.
  """

  def __init__(self, wall_minutes: float, cpu_minutes: float):
    """Starts both clocks; a limit <= 0 is off (its clock still runs, for `cpu_minutes`)."""
    self._limits = [
      (clock, 60.0 * m if m > 0 else math.inf, clock())
      for clock, m in ((time.perf_counter, wall_minutes), (time.process_time, cpu_minutes))
    ]
    self._paused = [0.0] * len(self._limits)

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Leaves the time spent inside the `with` block out of the budget."""
    before = [clock() for clock, _, _ in self._limits]
    yield
    for i, (clock, _, _) in enumerate(self._limits):
      self._paused[i] += clock() - before[i]

  def _used(self) -> list[float]:
    return [clock() - start - p for (clock, _, start), p in zip(self._limits, self._paused)]

  def spent(self) -> bool:
    """Whether any limit is used up."""
    return any(u > limit for u, (_, limit, _) in zip(self._used(), self._limits))

  def cpu_minutes(self) -> float:
    """Training CPU time of this process so far (paused blocks left out), in minutes."""
    return self._used()[1] / 60.0

  def __str__(self) -> str:
    names = {time.perf_counter: "wall", time.process_time: "CPU"}
    return ", ".join(
      f"{u / 60:.1f} min {names[c]}"
      for u, (c, limit, _) in zip(self._used(), self._limits)
      if math.isfinite(limit)
    )


class Untimed(Hook):
  """`hook`, with the time its calls take left out of `budget` (its `start` is not)."""

  def __init__(self, hook: Hook, budget: Budget):
    self.hook, self.budget = hook, budget
    self.every, self.at_end = hook.every, hook.at_end

  def due(self, step: int) -> bool:
    return self.hook.due(step)

  def start(self, step: int, state: GANState) -> None:
    self.hook.start(step, state)

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    with self.budget.paused():
      return self.hook(step, state, metrics)

  def close(self) -> None:
    self.hook.close()


class StopHook(Hook):
  """Ends the run early when the time budget is spent, or at once when a step went non-finite.

  First in the list, so that it acts before anything of the step is written. When the budget is
  spent the step becomes the last (previews, evaluation and checkpoint follow as at the end).
  Every `sync_every` steps it waits on the device (the non-finite check), however rarely the
  other hooks do. Not run after the last step: the hooks that write check finiteness themselves.
  """

  every = 1
  at_end = False

  def __init__(
    self,
    budget: Budget,
    guard: FiniteGuard,
    log: Callable[[str], None],
    sync_every: int = MAX_STEPS_IN_FLIGHT,
  ):
    self.budget, self.guard, self.log, self.sync_every = budget, guard, log, sync_every

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    reason = None
    if self.budget.spent():
      reason = f"training time limit reached at step {step} ({self.budget})"
      self.log(f"\n{reason}")
    if step % self.sync_every == 0:
      self.guard.check(metrics)  # waits on the device
    return reason


class StopFlag:
  """Turns the first Ctrl-C / SIGTERM into a request to save and stop; a second one aborts."""

  def __init__(self):
    self.requested = False
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> StopFlag:
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()


class InterruptHook(Hook):
  """Ctrl-C / SIGTERM: saves the step just done and raises KeyboardInterrupt (the CLI exits 130).

  Last in the list, so that the step's other hooks have run. Catches the signals from `start`
  to `close`; a second Ctrl-C aborts at once. Not run after the last step, which is saved anyway.
  """

  at_end = False

  def __init__(
    self,
    save: Callable[[int, GANState, Metrics], Any],
    workdir: str,
    log: Callable[[str], None],
    flag: StopFlag | None = None,
  ):
    """Builds the hook.

    Args:
      save: saves a step (the save hook).
      workdir: the run folder (named in the messages).
      log: where the stop is announced.
      flag: the signal catcher; a new StopFlag by default.
    """
    self.save, self.workdir, self.log = save, workdir, log
    self.flag = StopFlag() if flag is None else flag

  def start(self, step: int, state: GANState) -> None:
    self.flag.__enter__()

  def due(self, step: int) -> bool:
    return self.flag.requested

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    where = checkpoint_dir(self.workdir)
    self.log(f"\nstopping: saving step {step} to {where}")
    self.save(step, state, metrics)
    raise KeyboardInterrupt(
      f"training stopped at step {step}, saved in {where}; run the same command to resume"
    )

  def close(self) -> None:
    self.flag.__exit__()


# -- Reporting: metrics, progress, previews, evaluations -----------------------------------------


class LogHook(Hook):
  """Every `every` steps and after the last: the step's metrics and the steps per second to
  metrics.jsonl, TensorBoard and the progress bar. Waits on the device (it reads the metrics),
  after checking that every step so far was finite.

  Owns `tensorboard` (the preview and evaluate hooks write to it too) and closes it.
  """

  def __init__(
    self,
    every: int,
    guard: FiniteGuard,
    start: int,
    *,
    metrics_path: str | None,
    tensorboard: Any | None = None,
    bar: Any | None = None,
  ):
    """Builds the hook.

    Args:
      every: log after every `every`-th step.
      guard: the run's non-finite check.
      start: the step training starts at (speed is measured from now and there).
      metrics_path: metrics.jsonl; None: write no records (not the main process).
      tensorboard: a `monitor.TensorBoardLogger`, or None.
      bar: a tqdm progress bar that shows the losses and speed, or None.
    """
    self.every, self.guard = every, guard
    self.metrics_path, self.tensorboard, self.bar = metrics_path, tensorboard, bar
    self._t_last, self._step_last = time.perf_counter(), start

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    self.guard.check(metrics)
    now = time.perf_counter()
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    rate = (step - self._step_last) / max(now - self._t_last, 1e-9)
    self._t_last, self._step_last = now, step
    if self.metrics_path is not None:
      append_jsonl(
        self.metrics_path, {"step": step, "time": time.time(), "steps_per_s": rate, **values}
      )
    if self.tensorboard is not None:
      self.tensorboard.scalars(step, {**values, "steps_per_s": rate})
    if self.bar is not None:
      self.bar.set_postfix(
        {"d": f"{values['d/loss']:.3f}", "g": f"{values['g/loss']:.3f}", "it/s": f"{rate:.2f}"},
        refresh=False,
      )
    return None

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


class ProgressHook(Hook):
  """Moves the progress bar one step after every step; closes it at the end."""

  def __init__(self, bar: Any):
    self.bar = bar

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    self.bar.update(1)
    return None

  def close(self) -> None:
    self.bar.close()


class PreviewHook(Hook):
  """Every `every` steps and after the last: clips from fixed latents as WAVs, a spectrogram grid
  and an audition page (report.html: each row's clips to play beside real clips of its style,
  the step's metrics and the curves so far) in `out_dir/step_<step>/`, and the first clip of each
  row and the grid to TensorBoard."""

  def __init__(
    self,
    every: int,
    render: Render,
    z: jax.Array,
    style_ids: jax.Array,
    rows: list[str],
    sample_rate: int,
    *,
    out_dir: str | None,
    tensorboard: Any | None = None,
    real: np.ndarray | None = None,
  ):
    """Builds the hook.

    Args:
      every: preview after every `every`-th step.
      render: the generator from its EMA parameters (all processes call it: it is sharded).
      z: [R * K, latent] fixed latents, K per row.
      style_ids: [R * K] the row of each latent.
      rows: R names: the styles, or ["all"] for an unconditional model.
      sample_rate: of the WAVs.
      out_dir: RUN/previews; None: render but write nothing (not the main process).
      tensorboard: a `monitor.TensorBoardLogger`, or None.
      real: [R * K', T, C] training clips for the audition page, K' per row (the same rows),
        or None.
    """
    self.every, self.render, self.z, self.style_ids = every, render, z, style_ids
    self.rows, self.sample_rate = rows, sample_rate
    self.out_dir, self.tensorboard, self.real = out_dir, tensorboard, real

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    audio = np.asarray(self.render(state.ema_params, self.z, self.style_ids))  # [R * K, T, C]
    k = audio.shape[0] // len(self.rows)
    names = [f"{self.rows[i // k]}_{i % k}" for i in range(audio.shape[0])]
    if self.out_dir is None:  # every process computes (the generator is sharded over all)
      return None
    out = os.path.join(self.out_dir, f"step_{step:07d}")
    previews.write_wavs(audio, names, out, self.sample_rate)
    grid = previews.spectrogram_grid(
      audio, self.rows, os.path.join(out, "grid.png"), self.sample_rate, title=f"step {step}"
    )
    self._audition_page(out, step, audio, metrics)
    if self.tensorboard is not None:
      for r, name in enumerate(self.rows):  # the first clip of each row, from the same latent
        self.tensorboard.audio(step, f"preview/{name}", audio[r * k], self.sample_rate)
      self.tensorboard.image(step, "preview/spectrograms", grid)
    return None

  def _audition_page(self, out: str, step: int, audio: np.ndarray, metrics: Metrics) -> None:
    """out/report.html: per row, the preview clips, then the real ones."""
    k = audio.shape[0] // len(self.rows)
    kr = 0 if self.real is None else self.real.shape[0] // len(self.rows)
    rows = []
    for r, name in enumerate(self.rows):
      rows.append(pages.ClipRow(f"{name}: generated", audio[r * k : (r + 1) * k]))
      if kr:
        rows.append(pages.ClipRow(f"{name}: real", self.real[r * kr : (r + 1) * kr]))
    images = []
    try:  # the curves so far (metrics.jsonl sits in the run folder, above previews/)
      run_dir = os.path.dirname(os.path.normpath(self.out_dir))
      with open(curves.plot_run(run_dir, os.path.join(out, "curves.png")), "rb") as f:
        images.append(("training curves", f.read()))
    except (FileNotFoundError, ValueError):
      pass  # nothing logged yet
    page = pages.audition_page(
      f"Preview at step {step}",
      rows,
      self.sample_rate,
      intro="The same latents at every preview step; real clips are from the training data.",
      sections=[(f"metrics at step {step}", pages.metrics_table(metrics))],
      images=images,
    )
    files.write_text(os.path.join(out, "report.html"), page)


class EvalHook(Hook):
  """Every `every` steps, after the last, and before the first step of a fresh run (the untrained
  generator: where every curve starts): scores of clips from fixed latents, to metrics.jsonl,
  TensorBoard and the console."""

  def __init__(
    self,
    every: int,
    render: Render,
    score: Callable[[np.ndarray, np.ndarray | None], dict[str, float]],
    z: jax.Array,
    style_ids: np.ndarray | None,
    clips: int,
    *,
    metrics_path: str | None,
    tensorboard: Any | None = None,
    log: Callable[[str], None] = print,
    cpu_minutes: Callable[[], float] | None = None,
  ):
    """Builds the hook.

    Args:
      every: evaluate after every `every`-th step.
      render: the generator from its EMA parameters.
      score: (audio [clips, T, C], style ids [clips] or None) -> {"eval/<name>": value}, e.g.
        `scores.light_eval` with the run's reference.
      z: [N, latent] fixed latents, N a multiple of EVAL_CHUNK.
      style_ids: [N] int32 style ids (None: unconditional).
      clips: how many of the N clips are scored.
      metrics_path: metrics.jsonl; None: write no records (not the main process).
      tensorboard: a `monitor.TensorBoardLogger`, or None.
      log: where the scores are printed.
      cpu_minutes: the run's training CPU minutes so far (`Budget.cpu_minutes`), recorded with
        each evaluation as "cpu_minutes" (curves at equal compute); None: not recorded.
    """
    self.every, self.render, self.score = every, render, score
    self.cpu_minutes = cpu_minutes
    self.z, self.style_ids, self.clips = z, style_ids, clips
    self.metrics_path, self.tensorboard, self.log = metrics_path, tensorboard, log

  def start(self, step: int, state: GANState) -> None:
    if step == 0:
      self(0, state, {})

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    chunks = []
    for i in range(0, self.z.shape[0], EVAL_CHUNK):
      ids = self.style_ids
      y = jnp.zeros(EVAL_CHUNK, jnp.int32) if ids is None else ids[i : i + EVAL_CHUNK]
      chunks.append(np.asarray(self.render(state.ema_params, self.z[i : i + EVAL_CHUNK], y)))
    audio = np.concatenate(chunks)[: self.clips]  # [clips, T, C]
    values = self.score(audio, None if self.style_ids is None else self.style_ids[: self.clips])
    if self.metrics_path is not None:
      clock = {} if self.cpu_minutes is None else {"cpu_minutes": round(self.cpu_minutes(), 4)}
      append_jsonl(self.metrics_path, {"step": step, "time": time.time(), **clock, **values})
    if self.tensorboard is not None:
      self.tensorboard.scalars(step, values)
    self.log(f"step {step}: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in values.items()))
    return None


# -- Saving --------------------------------------------------------------------------------------


class SaveHook(Hook):
  """Every `every` steps and after the last: a checkpoint of the state and the run's metadata,
  after checking that every step so far was finite (a bad step is never saved)."""

  def __init__(
    self,
    every: int,
    checkpointer: Any,
    guard: FiniteGuard,
    *,
    tree: Callable[[GANState], Any],
    metadata: Callable[[], dict[str, Any]],
  ):
    """Builds the hook.

    Args:
      every: save after every `every`-th step.
      checkpointer: a `checkpoints.Checkpointer`; closed (its saves waited for) at the end.
      guard: the run's non-finite check; told each step saved.
      tree: the state as the checkpoint's tree of arrays.
      metadata: the JSON metadata of a checkpoint taken now (the loader's position changes).
    """
    self.every, self.checkpointer, self.guard = every, checkpointer, guard
    self.tree, self.metadata = tree, metadata

  def __call__(self, step: int, state: GANState, metrics: Metrics) -> str | None:
    self.guard.check(metrics)
    self.guard.last_good = step
    self.checkpointer.save(step, self.tree(state), self.metadata())
    return None

  def close(self) -> None:
    self.checkpointer.close()
