"""A thin, tested layer over `orbax.checkpoint.CheckpointManager`.

Every checkpoint step holds two items written together:

  <directory>/<step>/state/     the training pytree (orbax `StandardSave`)
  <directory>/<step>/metadata/  a JSON dict (orbax `JsonSave`): the resolved run
                                config, the style names, ... so a checkpoint
                                explains itself without the code that wrote it.

Orbax writes each step into `<step>.orbax-checkpoint-tmp-*` and renames it to
`<step>` only once every item is committed, and it never lists the temporary
names as steps; a process killed mid-save therefore leaves at worst an ignored
temporary directory, never a step that `latest_step()` reports but cannot
restore.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wavegan.errors import UserError

_STATE = "state"
_METADATA = "metadata"
_REPLICA_AXIS = "replica"


class CheckpointNotFoundError(UserError, FileNotFoundError):
  """No (such) checkpoint step in a checkpoint directory."""


class _DropOrbaxInfo(logging.Filter):
  """Drops orbax's sub-WARNING records from the shared `absl` logger.

  Orbax logs ~60 INFO lines per save through absl. They stay hidden by default
  but flood the console as soon as an application sets the root logger to INFO,
  so they are dropped here; other absl users (grain, ...) are left alone.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    path = record.pathname.replace(os.sep, "/")
    return "/orbax/" not in path


def _quiet_orbax_logging() -> None:
  """Installs `_DropOrbaxInfo` on the absl logger once (idempotent)."""
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxInfo())


def _replicated_sharding() -> jax.sharding.Sharding:
  """A sharding that replicates an array over every device of the job.

  Used only for template leaves that carry no sharding of their own *and* whose
  saved sharding does not exist on this topology (e.g. saved on 8 devices,
  restored on 1): replicating is always valid, whatever the device count.
  """
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (_REPLICA_AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _reader(directory: str) -> ocp.CheckpointManager:
  """An orbax manager that only reads `directory`: it creates, deletes and writes nothing."""
  options = ocp.CheckpointManagerOptions(
    preservation_policy=None, enable_async_checkpointing=False, create=False
  )
  return ocp.CheckpointManager(directory, options=options)


def _path_name(path: tuple[Any, ...]) -> str:
  """`a/0/b` for the path of `tree["a"][0]["b"]`."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _partial_restore_args(abstract_part: Any) -> ocp.args.PyTreeRestore:
  """Orbax arguments restoring only the leaves of `abstract_part` (see `Checkpointer.restore`).

  Orbax's `StandardRestore` cannot leave saved leaves out; `PyTreeRestore` can, given every
  leaf's sharding.
  """
  shardings = jax.tree.map(
    lambda leaf: getattr(leaf, "sharding", None) or _replicated_sharding(), abstract_part
  )
  return ocp.args.PyTreeRestore(
    abstract_part,
    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part, shardings),
    partial_restore=True,
  )


def _check_json(metadata: dict[str, Any]) -> None:
  """Raises TypeError now, rather than later in orbax's background thread.

  NaN and infinity are refused too: orbax would write them as bare `NaN`, which
  is not JSON and which other readers of the metadata reject.
  """
  if not isinstance(metadata, dict):
    raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
  try:
    json.dumps(metadata, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise TypeError(f"metadata is not JSON-serialisable: {e}") from e


class Checkpointer:
  """Saves and restores (state, metadata) pairs, one directory per step.

  Not thread-safe (neither is the orbax manager). Under multi-process JAX every
  process must make the same calls; orbax coordinates the writes.

  Example::

    with Checkpointer("runs/x/ckpt", keep=3) as ckpt:
      ckpt.save(step, state_dict, {"config": cfg.to_dict()})
      state, meta = ckpt.restore(abstract_state)
  """

  def __init__(
    self, directory: str, *, keep: int = 3, async_save: bool = True, read_only: bool = False
  ):
    """Opens (and, unless `read_only`, creates if missing) a checkpoint directory.

    Args:
      directory: where the step directories live; made absolute because orbax
        requires an absolute path.
      keep: how many of the most recent checkpoints to keep (>= 1).
      async_save: if True, `save` returns once arrays are copied to host memory
        and the files are written in a background thread.
      read_only: for readers of a run: nothing is created or deleted (not even
        `directory`, which may be missing: it then holds no checkpoint) and
        `save` refuses.
    """
    if keep < 1:
      raise ValueError(f"keep={keep}: must be >= 1")
    _quiet_orbax_logging()
    self._directory = os.path.abspath(os.fspath(directory))
    self._closed = False
    self._read_only = read_only
    # Not orbax's own `read_only` option: it logs warnings on every open, which
    # would reach the console of every read-only command. `create=False` and
    # no retention policy already make opening and restoring write nothing.
    options = ocp.CheckpointManagerOptions(
      # `max_to_keep` is deprecated in this orbax; LatestN is its replacement.
      preservation_policy=None if read_only else ocp.checkpoint_managers.LatestN(n=keep),
      enable_async_checkpointing=async_save and not read_only,
      create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self._directory, options=options)

  @property
  def directory(self) -> str:
    """The absolute checkpoint directory."""
    return self._directory

  def latest_step(self) -> int | None:
    """Returns the newest step, or None if there is no checkpoint.

    Within the writing process this includes a step whose asynchronous save is
    still in flight (`restore` waits for it); a fresh `Checkpointer` only sees
    committed steps.
    """
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Returns the kept steps, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, metadata: dict[str, Any]) -> bool:
    """Saves `state` and `metadata` as checkpoint `step`.

    With `async_save` this returns once the device->host copy is done; call
    `wait` (or `close`) to be sure the files are committed. A previous save still
    in flight is waited for first. Old steps beyond `keep` are deleted once the
    new one is committed.

    Args:
      step: the step number; must not be below the latest saved step.
      state: a pytree (nested dicts) of jax.Array / np.ndarray leaves.
      metadata: a JSON-serialisable dict stored alongside (tuples come back as
        lists, non-string keys as strings, as JSON does).

    Returns:
      True if a checkpoint was written, False if `step` already exists.

    Raises:
      TypeError: `metadata` is not a JSON-serialisable dict.
      ValueError: `step` is below the latest step but not saved (orbax tracks
        steps in save order, so saving out of order would corrupt retention).
    """
    if self._read_only:
      raise ValueError(f"cannot save step {step} in {self._directory}: opened read-only")
    step = int(step)
    _check_json(metadata)
    latest = self.latest_step()
    if step in self._manager.all_steps():
      return False
    if latest is not None and step < latest:
      raise ValueError(
        f"cannot save step {step} in {self._directory}: it is older than the latest step {latest}"
      )
    args = ocp.args.Composite(
      **{_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(metadata)}
    )
    # force=True: this class, not orbax's save-interval policy, decides what to save.
    return bool(self._manager.save(step, args=args, force=True))

  def restore(
    self, abstract_state: Any, step: int | None = None, *, partial: bool = False
  ) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` (default: the latest) into `abstract_state`'s layout.

    Args:
      abstract_state: a pytree matching the saved one, of jax.ShapeDtypeStruct
        (ideally with `.sharding`) or concrete arrays. Each leaf's dtype and
        sharding decide how it is restored, so the checkpoint may come from a
        different device count. A leaf without a sharding gets the saved one
        when this topology has it, else is replicated over all devices.
      step: which step; None means the latest.
      partial: if True, `abstract_state` is part of the saved tree (nested dicts
        naming some of its entries, e.g. `{"ema_params": ...}`): only those
        leaves are read; the others need not even be readable. A leaf without
        a sharding is then replicated over all devices (finding the saved one
        would open every saved array).

    Returns:
      (state, metadata): the restored pytree and the JSON metadata dict.

    Raises:
      CheckpointNotFoundError: no checkpoint, or no such step.
      KeyError: with `partial`, a leaf of `abstract_state` that the step does not hold.
    """
    step = self._resolve_step(step)
    if partial:
      state_args = _partial_restore_args(abstract_state)
    else:
      state_args = ocp.args.StandardRestore(
        abstract_state, fallback_sharding=_replicated_sharding()
      )
    args = ocp.args.Composite(**{_STATE: state_args, _METADATA: ocp.args.JsonRestore()})
    if partial:
      # A manager of its own: orbax binds an item to the handler of the first arguments it
      # saves or restores it with (here `StandardSave`/`StandardRestore`), and refuses others.
      reader = _reader(self._directory)
      try:
        restored = reader.restore(step, args=args)
      finally:
        reader.close()
      self._check_restored(step, abstract_state, restored[_STATE])
    else:
      restored = self._manager.restore(step, args=args)
    return restored[_STATE], restored[_METADATA]

  def _check_restored(self, step: int, abstract_part: Any, restored: Any) -> None:
    """Raises KeyError for a leaf of a partial restore that the checkpoint does not hold.

    Orbax hands such a leaf back unchanged (the template's own object) instead of failing.
    """

    def check(path: tuple[Any, ...], want: Any, got: Any) -> None:
      if got is want:
        raise KeyError(f"step {step} in {self._directory} holds no {_path_name(path)}")

    jax.tree_util.tree_map_with_path(check, abstract_part, restored)

  def read_metadata(self, step: int | None = None) -> dict[str, Any]:
    """Returns the JSON metadata of `step` (default: the latest) without reading the state.

    Raises:
      CheckpointNotFoundError: no checkpoint, or no such step.
    """
    step = self._resolve_step(step)
    args = ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()})
    restored = self._manager.restore(step, args=args)
    return restored[_METADATA]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed (re-raises their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads; safe to call twice."""
    if self._closed:
      return
    self._closed = True
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def _resolve_step(self, step: int | None) -> int:
    """Waits for in-flight saves, then maps None to the latest step and checks it exists."""
    # A step saved asynchronously by this process is listed before it is
    # committed; reading it before the rename would fail.
    self.wait()
    steps = self._manager.all_steps()
    if not steps:
      raise CheckpointNotFoundError(f"no checkpoint in {self._directory}")
    if step is None:
      return max(steps)
    if int(step) not in steps:
      raise CheckpointNotFoundError(
        f"no checkpoint for step {step} in {self._directory} (have {sorted(steps)})"
      )
    return int(step)
