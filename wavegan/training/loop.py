"""The training loop: data -> jitted step -> metrics, previews and checkpoints, resumable.

`train` sets a run up (data, resolved config, state, restore), builds its hooks
(`wavegan.training.hooks`: stop, log, progress, preview, evaluate, save, interrupt) and runs
`run_loop`, a loop over steps that calls them. A run lives in one folder:

  RUN/config.json          the resolved config (also stored in every checkpoint)
  RUN/checkpoints/<step>/  orbax checkpoints: GANState + metadata (config, styles, preset)
  RUN/metrics.jsonl        one JSON object per logged step
  RUN/previews/            WAVs and a spectrogram grid from fixed latents, every N steps
  RUN/tensorboard/         the same scalars, preview audio and spectrograms for TensorBoard
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from checkpoints import Checkpointer
from data_pipelines import Loader
from wavegan import files, inputs
from wavegan.conditioning import Conditioning
from wavegan.config import Config, ConfigError
from wavegan.evaluation import scores
from wavegan.models import kinds
from wavegan.run import RunInfo, checkpoint_dir, saved_run
from wavegan.synthesis import synthesizer
from wavegan.training import distributed
from wavegan.training import step as ts
from wavegan.training.hooks import (
  EVAL_CHUNK,
  Budget,
  EvalHook,
  FiniteGuard,
  Hook,
  InterruptHook,
  LogHook,
  Metrics,
  PreviewHook,
  ProgressHook,
  Render,
  SaveHook,
  StopHook,
  Untimed,
)

AUG_P = "aug_p"  # the state's entry that checkpoints from before augmentation do not hold

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
  "compute.conv",
  "eval.every",
  "eval.clips",
  "eval.classifier_steps",
  "eval.classifier_width",
}


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
    model = dataclasses.replace(cfg.model, num_styles=n, style_groups=(), num_attributes=0)
  else:
    model = dataclasses.replace(
      cfg.model,
      num_styles=sum(conditioning.groups),
      style_groups=tuple(conditioning.groups),
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


def eval_inputs(cfg: Config, styles: tuple[str, ...]) -> tuple[jax.Array, np.ndarray | None]:
  """Fixed latents [eval_clips, latent] and style ids for light evaluations, the same every time."""
  n = -(-cfg.eval.clips // EVAL_CHUNK) * EVAL_CHUNK
  z = ts.sample_latents(jax.random.key(cfg.train.seed + 3), n, cfg.model.latent_dim)
  ids = (np.arange(n) % len(styles)).astype(np.int32) if cfg.model.conditional else None
  return z, ids


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


def run_loop(
  step_fn: Callable[[ts.GANState, jax.Array, jax.Array], tuple[ts.GANState, Metrics]],
  state: ts.GANState,
  batches: Iterator[tuple[jax.Array, jax.Array]],
  hooks: Sequence[Hook],
  guard: FiniteGuard,
  *,
  step: int,
  total: int,
) -> ts.GANState:
  """Trains from `step` until `total` steps are done, calling the hooks between steps.

  After each step, the hooks that are due run in list order; after the last step, those with
  `at_end`. A hook that returns a reason makes the step the last: the hooks after it run as after
  the last step. Steps are dispatched without waiting on the device: only hooks wait (reading
  metrics or audio, and the stop hook every MAX_STEPS_IN_FLIGHT steps).

  Args:
    step_fn: (state, real [n_critic, B, T, C], labels [n_critic, B]) -> (state, metrics).
    state: the state after `step` steps.
    batches: global batches (real, labels), placed on the mesh.
    hooks: started in order before the first step, closed in reverse order at the end.
    guard: told every step's metrics, on the device.
    step: the steps already done.
    total: the step to stop after.

  Returns:
    The state after the last step.
  """
  try:
    for hook in hooks:
      hook.start(step, state)
    while step < total:
      real, labels = next(batches)
      state, metrics = step_fn(state, real, labels)
      step += 1
      guard.observe(step, metrics)  # on the device: no sync
      for hook in hooks:
        if hook.at_end if step == total else hook.due(step):
          if hook(step, state, metrics) is not None:
            total = step  # finish as at the last step
  finally:
    for hook in reversed(hooks):
      hook.close()
  return state


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
  models, state = ts.build(cfg)
  state = jax.device_put(state, replicated)
  step_fn = ts.make_train_step(models, cfg, mesh, run.spec_moments)
  render = _renderer(run, models)
  ckpt = Checkpointer(checkpoint_dir(workdir), keep=cfg.train.keep_checkpoints)
  start, state, loader_state = _restore(ckpt, cfg, state, replicated, workdir, log)
  loader = _open_loader(data, cfg, start, loader_state, log)
  guard = FiniteGuard(workdir, start or None, replicated)
  hooks = make_hooks(run, data, workdir, start, render, ckpt, loader, guard, main, progress, log)
  # This process's rows b of each global batch B, laid out over the mesh's data axis.
  batches = _global_batches(loader, NamedSharding(mesh, P(None, ts.DATA_AXIS)))
  try:
    state = run_loop(step_fn, state, batches, hooks, guard, step=start, total=cfg.train.steps)
  finally:
    loader.close()
  return run, state


def _renderer(run: RunInfo, models: ts.Models) -> Render:
  """The run's generator for previews and evaluations: (ema params, z [N, latent], style ids [N])
  -> audio [N, T, C]; style ids index the first label field's values."""
  preview_fn = jax.jit(
    synthesizer.audio_fn(
      run.config.model, models.g_graph, run.spec_moments, run.config.compute.conv
    )
  )
  styles_of = (lambda ids: ids) if run.conditioning.simple else run.conditioning.for_first_field

  def render(params: Any, z: jax.Array, ids: Any) -> jax.Array:
    return preview_fn(params, z, styles_of(ids))

  return render


def _restore(
  ckpt: Checkpointer,
  cfg: Config,
  state: ts.GANState,
  sharding: jax.sharding.Sharding,
  workdir: str,
  log: Callable[[str], None],
) -> tuple[int, ts.GANState, dict[str, Any] | None]:
  """(step, state, loader state) of the run's latest checkpoint; (0, `state`, None) if none.

  A checkpoint from before the state held `aug_p` keeps `state`'s (the config's `augment.p`).
  """
  start = ckpt.latest_step() or 0
  if not start:
    return 0, state, None
  template = abstract_state(cfg, sharding)
  if _holds(ckpt, start, AUG_P, template[AUG_P]):
    tree, saved_md = ckpt.restore(template, start)
  else:
    tree, saved_md = ckpt.restore({k: v for k, v in template.items() if k != AUG_P}, start)
    tree[AUG_P] = state.aug_p
  log(f"resuming {workdir} at step {start}")
  return start, _from_tree(tree), saved_md.get("loader")


def _holds(ckpt: Checkpointer, step: int, name: str, leaf: jax.ShapeDtypeStruct) -> bool:
  """Whether checkpoint `step` holds the state entry `name` (an array like `leaf`); reads it alone."""
  try:
    ckpt.restore({name: leaf}, step, partial=True)
  except KeyError:
    return False
  return True


def _open_loader(
  data: inputs.TrainData,
  cfg: Config,
  start: int,
  loader_state: dict[str, Any] | None,
  log: Callable[[str], None],
) -> Loader:
  """This process's batches from step `start` on, from the checkpoint's position when it fits."""
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
  return loader


def _global_batches(
  loader: Loader, sharding: jax.sharding.Sharding
) -> Iterator[tuple[jax.Array, jax.Array]]:
  """The loader's batches as global arrays: real [n_critic, B, T, C], labels [n_critic, B]."""
  for real, labels in loader:  # [n_critic, b, T, C], [n_critic, b]: this process's rows
    yield (
      jax.make_array_from_process_local_data(sharding, real),
      jax.make_array_from_process_local_data(sharding, labels),
    )


def make_hooks(
  run: RunInfo,
  data: inputs.TrainData,
  workdir: str,
  start: int,
  render: Render,
  ckpt: Checkpointer,
  loader: Loader,
  guard: FiniteGuard,
  main: bool,
  progress: bool,
  log: Callable[[str], None],
) -> list[Hook]:
  """The hooks of a run, in calling order (see `wavegan.training.hooks`).

  Trains the reference classifier first when the run has light evaluations (or loads it from the
  corpus cache), and drops the metrics.jsonl records of steps after `start`.

  Args:
    run, data, workdir: the resolved run, its training data and its folder.
    start: the step training starts at.
    render: the generator: (ema params, z [N, latent], style ids [N]) -> audio [N, T, C].
    ckpt: the run's checkpoints (the save hook closes it).
    loader: the batches (its position goes into each checkpoint).
    guard: the run's non-finite check.
    main: whether this process writes the run's files.
    progress: whether to show a progress bar.
    log: console lines.
  """
  cfg, t = run.config, run.config.train
  score = _light_eval(run, data, log) if cfg.eval.every else None
  tensorboard = _tensorboard(workdir, start) if t.tensorboard and main else None
  metrics_path = os.path.join(workdir, "metrics.jsonl") if main else None
  if main:
    _truncate_jsonl(metrics_path, start)  # steps after the last checkpoint are trained again
  previews_dir = os.path.join(workdir, "previews") if main else None
  preview = _preview_hook(run, data, render, previews_dir, tensorboard)
  budget = Budget(t.max_minutes, t.max_cpu_minutes)
  evaluate = (
    None
    if score is None
    else _eval_hook(run, render, score, metrics_path, tensorboard, log, budget.cpu_minutes)
  )
  bar = tqdm(total=t.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True)
  hooks = [
    StopHook(budget, guard, log),
    LogHook(t.log_every, guard, start, metrics_path=metrics_path, tensorboard=tensorboard, bar=bar),
    ProgressHook(bar),
    Untimed(preview, budget),
  ]
  if evaluate is not None:  # its start, the step-0 evaluation, is timed
    hooks.append(Untimed(evaluate, budget))
  metadata = functools.partial(_checkpoint_metadata, run, data, loader)
  save = SaveHook(t.checkpoint_every, ckpt, guard, tree=_to_tree, metadata=metadata)
  return [*hooks, save, InterruptHook(save, workdir, log)]


def _light_eval(
  run: RunInfo, data: inputs.TrainData, log: Callable[[str], None]
) -> Callable[[np.ndarray, np.ndarray | None], dict[str, float]]:
  """(audio [N, T, C], style ids [N] | None) -> light evaluation scores, by the run's reference
  classifier, made now (by the main process first) or loaded from the corpus cache."""
  cfg = run.config
  ref = distributed.main_first(
    lambda: scores.reference(data, cfg.data.label_field, scores.classifier_config(cfg), log=log),
    "classifier",
  )
  return functools.partial(scores.light_eval, ref)


def _preview_hook(
  run: RunInfo,
  data: inputs.TrainData,
  render: Render,
  out_dir: str | None,
  tensorboard: Any | None,
) -> PreviewHook:
  """Previews of the run's styles (or of "all"), `train.preview_per_style` clips each, with as
  many real clips of each for the audition page (main process only)."""
  z, style_ids, rows = preview_inputs(run.config, run.styles)
  every, sample_rate = run.config.train.preview_every, run.config.data.sample_rate
  k = run.config.train.preview_per_style
  real = preview_real(data, len(rows) if run.config.model.conditional else 0, k)
  return PreviewHook(
    every,
    render,
    z,
    style_ids,
    rows,
    sample_rate,
    out_dir=out_dir,
    tensorboard=tensorboard,
    real=real if out_dir is not None else None,
  )


def preview_real(data: inputs.TrainData, n_styles: int, k: int) -> np.ndarray | None:
  """The first `k` training clips of each style id 0 .. n_styles - 1 ([n_styles * k, T, C]; a
  style with fewer clips repeats them), or of the whole corpus when `n_styles` is 0; None when a
  style has no clip."""
  if n_styles == 0:
    idx = np.arange(k) % len(data.labels)
  else:
    per = [np.flatnonzero(data.labels == i) for i in range(n_styles)]
    if any(p.size == 0 for p in per):
      return None
    idx = np.concatenate([p[np.arange(k) % p.size] for p in per])
  return data.cache.gather(idx)


def _eval_hook(
  run: RunInfo,
  render: Render,
  score: Callable[[np.ndarray, np.ndarray | None], dict[str, float]],
  metrics_path: str | None,
  tensorboard: Any | None,
  log: Callable[[str], None],
  cpu_minutes: Callable[[], float] | None = None,
) -> EvalHook:
  """The run's light evaluation of `eval.clips` clips, every `eval.every` steps."""
  z, style_ids = eval_inputs(run.config, run.styles)
  e = run.config.eval
  return EvalHook(
    e.every,
    render,
    score,
    z,
    style_ids,
    e.clips,
    metrics_path=metrics_path,
    tensorboard=tensorboard,
    log=log,
    cpu_minutes=cpu_minutes,
  )


def _tensorboard(workdir: str, start: int) -> Any:
  """A TensorBoard writer for the run, dropping the events a killed run left after `start`."""
  from wavegan.training.monitor import TensorBoardLogger  # pylint: disable=g-import-not-at-top

  return TensorBoardLogger(workdir, start_step=start)


def _checkpoint_metadata(run: RunInfo, data: inputs.TrainData, loader: Loader) -> dict[str, Any]:
  """The JSON stored with a checkpoint taken now: the run, the loader's position, the labels."""
  return {
    **run.metadata(),
    "loader": loader.state(),
    "label_vocab": {k: list(v) for k, v in data.cache.vocab.items()},
  }


def abstract_state(cfg: Config, sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """Shapes, dtypes (and placement) of a run's checkpointed state, without computing it."""
  tree = jax.eval_shape(lambda: _to_tree(ts.build(cfg)[1]))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _to_tree(state: ts.GANState) -> dict[str, Any]:
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def _from_tree(tree: dict[str, Any]) -> ts.GANState:
  return ts.GANState(**tree)
