"""The training loop: data -> jitted step -> metrics, previews and checkpoints, resumable.

A run lives in one folder:

  RUN/config.json          the resolved config (also stored in every checkpoint)
  RUN/checkpoints/<step>/  orbax checkpoints: GANState + metadata (config, styles, preset)
  RUN/metrics.jsonl        one JSON object per logged step
  RUN/previews/            WAVs and a spectrogram grid from fixed latents, every N steps
  RUN/tensorboard/         the same scalars, preview audio and spectrograms for TensorBoard
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from checkpoints import Checkpointer
from data_pipelines import Loader
from wavegan import dsp, files, inputs
from wavegan.conditioning import Conditioning
from wavegan.config import Config, ConfigError
from wavegan.errors import NonFiniteError
from wavegan.evaluation import scores
from wavegan.models import kinds
from wavegan.run import RunInfo, checkpoint_dir, saved_run
from wavegan.synthesis import previews, synthesizer
from wavegan.training import distributed
from wavegan.training import step as ts

# Resuming may change how long and how often, never what is trained.
RESUMABLE_CHANGES = {
  "train.steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.preview_every",
  "data.path",
  "data.manifest",
  "data.prepare_workers",
  "data.loader_workers",
  "data.prefetch",
  "data.store_dtype",
  "train.tensorboard",
  "train.max_minutes",
  "train.max_cpu_minutes",
  "compute.dtype",
  "compute.grad_accum",
  "compute.remat",
  "eval.every",
  "eval.clips",
  "eval.classifier_steps",
  "eval.classifier_width",
}
# CPU collectives deadlock when ~50 multi-device steps are queued unsynchronised; wait on the
# device at least this often even when logging is rarer.
MAX_STEPS_IN_FLIGHT = 8


def config_diff(a: Config, b: Config) -> list[str]:
  """Dotted keys whose values differ between two configs."""
  da, db = a.to_dict(), b.to_dict()
  return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]


def with_styles(
  cfg: Config, styles: tuple[str, ...], conditioning: Conditioning = Conditioning()
) -> Config:
  """Sets the model's conditioning from the corpus.

  One label field: conditional only with two or more styles (model.num_styles). Several fields or
  attributes: the style vector's blocks (model.style_groups, model.num_attributes).
  """
  if conditioning.simple:
    n = len(styles) if len(styles) > 1 else 0
    model = dataclasses.replace(cfg.model, num_styles=n, style_groups="", num_attributes=0)
  else:
    model = dataclasses.replace(
      cfg.model,
      num_styles=sum(conditioning.groups),
      style_groups=",".join(map(str, conditioning.groups)),
      num_attributes=len(conditioning.attributes),
    )
  return dataclasses.replace(cfg, model=model)


def resolve_run(
  requested: Config,
  workdir: str,
  preset: str,
  styles: tuple[str, ...],
  conditioning: Conditioning = Conditioning(),
  spec_moments: dict[str, list[float]] | None = None,
) -> RunInfo:
  """Combines the requested config with the run already in `workdir`, if any.

  A resumed run keeps the attribute and STFT moments it started with.
  """
  fresh = RunInfo(
    with_styles(requested, styles, conditioning).validate(),
    styles,
    preset,
    conditioning,
    spec_moments,
  )
  kinds.check(fresh.config)
  saved = saved_run(workdir)
  if saved is None:
    return fresh
  if (saved.conditioning.fields, saved.conditioning.attribute_names) != (
    conditioning.fields,
    conditioning.attribute_names,
  ):
    raise ConfigError(
      f"{workdir} was trained on other label fields or attributes "
      f"({saved.conditioning.to_dict()}); use the same data or a new --workdir"
    )
  changed = [k for k in config_diff(saved.config, fresh.config) if k not in RESUMABLE_CHANGES]
  if changed:
    raise ConfigError(
      f"{workdir} holds a run with a different config ({', '.join(changed)}); "
      "resume it unchanged or use a new --workdir"
    )
  if saved.styles != styles:
    raise ConfigError(
      f"{workdir} was trained on styles {list(saved.styles)} but the data has "
      f"{list(styles)}; use the same data or a new --workdir"
    )
  return RunInfo(
    fresh.config, saved.styles, saved.preset or preset, saved.conditioning, saved.spec_moments
  )


def preview_inputs(cfg: Config, styles: tuple[str, ...]) -> tuple[jax.Array, jax.Array, list[str]]:
  """Fixed latents [R * K, latent] and style ids for previews, the same at every step."""
  k = cfg.train.preview_per_style
  rows = list(styles) if cfg.model.conditional else ["all"]
  z = ts.sample_latents(jax.random.key(cfg.train.seed + 2), len(rows) * k, cfg.model.latent_dim)
  style_ids = jnp.repeat(jnp.arange(len(rows), dtype=jnp.int32), k)
  return z, style_ids, rows


class _StopFlag:
  """Turns the first Ctrl-C / SIGTERM into a request to save and stop; a second one aborts."""

  def __init__(self):
    self.requested = False
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> _StopFlag:
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


class _Budget:
  """`train.max_minutes` (wall clock) and `train.max_cpu_minutes` (CPU time of this process).

  Only training counts: data preparation and the reference classifier come before the clocks
  start, and previews and evaluations are subtracted, so runs given equal minutes are compared
  at equal training compute.
  """

  def __init__(self, wall_minutes: float, cpu_minutes: float):
    self._limits = [
      (clock, 60.0 * m, clock())
      for clock, m in ((time.perf_counter, wall_minutes), (time.process_time, cpu_minutes))
      if m > 0
    ]
    self._paused = [0.0] * len(self._limits)

  def untimed(self, fn: Callable[[int], None], at: int) -> None:
    before = [clock() for clock, _, _ in self._limits]
    fn(at)
    for i, (clock, _, _) in enumerate(self._limits):
      self._paused[i] += clock() - before[i]

  def _used(self) -> list[float]:
    return [clock() - start - p for (clock, _, start), p in zip(self._limits, self._paused)]

  def spent(self) -> bool:
    return any(u > limit for u, (_, limit, _) in zip(self._used(), self._limits))

  def __str__(self) -> str:
    names = {time.perf_counter: "wall", time.process_time: "CPU"}
    return ", ".join(
      f"{u / 60:.1f} min {names[c]}" for u, (c, _, _) in zip(self._used(), self._limits)
    )


EVAL_CHUNK = 64  # clips per generator call in light evaluations (one compiled shape)


def eval_inputs(cfg: Config, styles: tuple[str, ...]) -> tuple[jax.Array, np.ndarray | None]:
  """Fixed latents [eval_clips, latent] and style ids for light evaluations, the same every time."""
  n = -(-cfg.eval.clips // EVAL_CHUNK) * EVAL_CHUNK
  z = ts.sample_latents(jax.random.key(cfg.train.seed + 3), n, cfg.model.latent_dim)
  ids = (np.arange(n) % len(styles)).astype(np.int32) if cfg.model.conditional else None
  return z, ids


@jax.jit
def first_bad_step(first: jax.Array, step: jax.Array, metrics: dict[str, jax.Array]) -> jax.Array:
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


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Drops records of steps after `last_step` (left by a run killed after its last save)."""
  if not os.path.exists(path):
    return

  def keep(line: str) -> bool:
    try:
      return json.loads(line)["step"] <= last_step
    except (ValueError, KeyError, TypeError):
      return False  # a line half-written when the run was killed

  with open(path) as f:
    lines = [line for line in f if line.strip() and keep(line)]
  files.write_text(path, "".join(lines))


def _append_jsonl(path: str, record: dict[str, Any]) -> None:
  files.append_line(path, json.dumps(record))


def train(
  requested: Config,
  workdir: str,
  *,
  preset: str = "",
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> tuple[RunInfo, ts.GANState]:
  """Trains (or resumes) the run in `workdir` until `train.steps` G updates are done.

  Ctrl-C or SIGTERM ends the current step, saves it and raises KeyboardInterrupt (the CLI
  exits with 130); a second one aborts at once.

  Returns:
    The run's description and its final state (host-side copies are not made).
  """
  main = distributed.is_main()
  if not main:  # one process speaks for the job
    log, progress = (lambda _: None), False

  def load():
    loaded_cfg, loaded = inputs.load_data(requested, progress=progress, log=log)
    moments = inputs.corpus_statistics(loaded.cache, loaded_cfg)
    return loaded_cfg, loaded, moments

  requested, data, spec_moments = distributed.main_first(load, "data prepared")
  run = resolve_run(requested, workdir, preset, data.styles, data.conditioning, spec_moments)
  data = dataclasses.replace(data, conditioning=run.conditioning)
  cfg = run.config
  os.makedirs(workdir, exist_ok=True)
  if main:
    files.write_text(os.path.join(workdir, "config.json"), cfg.to_json())

  mesh = ts.data_mesh()
  ts.check_batch(cfg.train.batch_size, mesh, cfg.compute.grad_accum)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(None, ts.DATA_AXIS))
  models, state = ts.build(cfg)
  state = jax.device_put(state, replicated)
  moments = None if run.spec_moments is None else dsp.moments_from_dict(run.spec_moments)
  step_fn = ts.make_train_step(models, cfg, mesh, moments)
  preview_fn = jax.jit(synthesizer.audio_fn(cfg.model, models.g_graph, run.spec_moments))
  styles_of = (lambda ids: ids) if run.conditioning.simple else run.conditioning.for_first_field

  ckpt = Checkpointer(checkpoint_dir(workdir), keep=cfg.train.keep_checkpoints)
  start = ckpt.latest_step() or 0
  loader_state = None
  if start:
    tree, saved_md = ckpt.restore(abstract_state(cfg, replicated), start)
    state = _from_tree(tree)
    loader_state = saved_md.get("loader")
    log(f"resuming {workdir} at step {start}")

  # Each JAX process reads its own rows of every global batch.
  source = data.batch_source(cfg, num_shards=jax.process_count(), shard_index=jax.process_index())
  loader = Loader(
    source,
    start_step=start,
    state=loader_state,
    workers=cfg.data.loader_workers,
    prefetch=cfg.data.prefetch,
  )
  if start:
    log(
      "data loader state restored from the checkpoint"
      if loader.restored
      else f"data loader restarted at step {start} (no matching saved state)"
    )
  z_prev, y_prev, rows = preview_inputs(cfg, run.styles)
  ref = None
  if cfg.eval.every:
    ref = distributed.main_first(
      lambda: scores.reference(data, cfg.data.label_field, scores.classifier_config(cfg), log=log),
      "classifier",
    )
    z_eval, y_eval = eval_inputs(cfg, run.styles)
  logger = None
  if cfg.train.tensorboard and main:
    from wavegan.training.monitor import TensorBoardLogger  # pylint: disable=g-import-not-at-top

    logger = TensorBoardLogger(workdir, start_step=start)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if main:
    _truncate_jsonl(metrics_path, start)  # steps after the last checkpoint are trained again
  total = cfg.train.steps

  first_bad = jax.device_put(jnp.int32(-1), replicated)
  last_good = [start or None]

  def save(step: int) -> None:
    check_finite(first_bad, pending, last_good[0], workdir)
    last_good[0] = step
    ckpt.save(
      step,
      _to_tree(state),
      {
        **run.metadata(),
        "loader": loader.state(),
        "label_vocab": {k: list(v) for k, v in data.cache.vocab.items()},
      },
    )

  def preview(step: int) -> None:
    audio = np.asarray(preview_fn(state.ema_params, z_prev, styles_of(y_prev)))
    k = cfg.train.preview_per_style
    names = [f"{rows[i // k]}_{i % k}" for i in range(audio.shape[0])]
    if not main:  # every process computes (the generator is sharded over all), one writes
      return
    out = os.path.join(workdir, "previews", f"step_{step:07d}")
    previews.write_wavs(audio, names, out, cfg.data.sample_rate)
    grid = previews.spectrogram_grid(
      audio, rows, os.path.join(out, "grid.png"), cfg.data.sample_rate, title=f"step {step}"
    )
    if logger is not None:
      for r, name in enumerate(
        rows
      ):  # the first clip of each style, from the same latent each time
        logger.audio(step, f"preview/{name}", audio[r * k], cfg.data.sample_rate)
      logger.image(step, "preview/spectrograms", grid)

  def light_eval(step: int) -> None:
    chunks = []
    for i in range(0, z_eval.shape[0], EVAL_CHUNK):
      y = jnp.zeros(EVAL_CHUNK, jnp.int32) if y_eval is None else y_eval[i : i + EVAL_CHUNK]
      chunks.append(
        np.asarray(preview_fn(state.ema_params, z_eval[i : i + EVAL_CHUNK], styles_of(y)))
      )
    audio = np.concatenate(chunks)[: cfg.eval.clips]  # [eval_clips, T, C]
    values = scores.light_eval(ref, audio, None if y_eval is None else y_eval[: cfg.eval.clips])
    if main:
      _append_jsonl(metrics_path, {"step": step, "time": time.time(), **values})
    if logger is not None:
      logger.scalars(step, values)
    log(f"step {step}: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in values.items()))

  bar = tqdm(total=total, initial=start, disable=not progress, unit="step", dynamic_ncols=True)
  step = start
  budget = _Budget(cfg.train.max_minutes, cfg.train.max_cpu_minutes)
  t_last, step_last = time.perf_counter(), start
  pending: dict[str, jax.Array] | None = None
  try:
    if ref is not None and start == 0:
      light_eval(0)  # the untrained generator: where every curve starts
    with _StopFlag() as stop:
      while step < total and not stop.requested:
        real, labels = next(loader)  # [n_critic, b, T, C], [n_critic, b]
        # This process's rows b of the global batch B, laid out over the mesh's data axis.
        real = jax.make_array_from_process_local_data(batch_sharding, real)
        labels = jax.make_array_from_process_local_data(batch_sharding, labels)
        state, pending = step_fn(state, real, labels)
        step += 1
        first_bad = first_bad_step(first_bad, step, pending)
        if step < total and budget.spent():
          log(f"\ntraining time limit reached at step {step} ({budget})")
          total = step  # finish as at the last step: preview, evaluate, save
        if step % cfg.train.log_every == 0 or step == total:
          check_finite(first_bad, pending, last_good[0], workdir)
          now = time.perf_counter()
          values = {k: float(v) for k, v in jax.device_get(pending).items()}
          rate = (step - step_last) / max(now - t_last, 1e-9)
          t_last, step_last = now, step
          if main:
            _append_jsonl(
              metrics_path, {"step": step, "time": time.time(), "steps_per_s": rate, **values}
            )
          if logger is not None:
            logger.scalars(step, {**values, "steps_per_s": rate})
          bar.set_postfix(
            {"d": f"{values['d/loss']:.3f}", "g": f"{values['g/loss']:.3f}", "it/s": f"{rate:.2f}"},
            refresh=False,
          )
        elif step % MAX_STEPS_IN_FLIGHT == 0:
          check_finite(first_bad, pending, last_good[0], workdir)  # waits on the device
        bar.update(1)
        if step % cfg.train.preview_every == 0 or step == total:
          budget.untimed(preview, step)
        if ref is not None and (step % cfg.eval.every == 0 or step == total):
          budget.untimed(light_eval, step)
        if step % cfg.train.checkpoint_every == 0 or step == total:
          save(step)
      if stop.requested and step < total:
        log(f"\nstopping: saving step {step} to {checkpoint_dir(workdir)}")
        save(step)
        raise KeyboardInterrupt(
          f"training stopped at step {step}, saved in "
          f"{checkpoint_dir(workdir)}; run the same command to resume"
        )
  finally:
    bar.close()
    ckpt.close()
    loader.close()
    if logger is not None:
      logger.close()
  return run, state


def abstract_state(cfg: Config, sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """Shapes, dtypes (and placement) of a run's checkpointed state, without computing it."""
  tree = jax.eval_shape(lambda: _to_tree(ts.build(cfg)[1]))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _to_tree(state: ts.GANState) -> dict[str, Any]:
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def _from_tree(tree: dict[str, Any]) -> ts.GANState:
  return ts.GANState(**tree)
