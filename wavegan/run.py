"""The run folder: its config and data description (`RunInfo`), its checkpoints, and reading them back."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from checkpoints import Checkpointer, CheckpointNotFoundError
from wavegan.conditioning import Conditioning
from wavegan.config import Config, ConfigError
from wavegan.models.kinds import abstract_generator

CHECKPOINT_DIR = "checkpoints"
EMA_PARAMS = "ema_params"  # the checkpointed state's entry for the generator synthesis uses


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a run is: its resolved config, style names and the preset it started from.

  Runs with several label fields or attributes also keep their `conditioning` (vocabularies and
  attribute moments); SpecGAN runs keep the STFT moments they normalise with.
  """

  config: Config
  styles: tuple[str, ...]
  preset: str = ""
  conditioning: Conditioning = Conditioning()
  spec_moments: dict[str, list[float]] | None = None

  def metadata(self) -> dict[str, Any]:
    md = {"config": self.config.to_dict(), "styles": list(self.styles), "preset": self.preset}
    if not self.conditioning.simple:
      md["conditioning"] = self.conditioning.to_dict()
    if self.spec_moments is not None:
      md["spec_moments"] = self.spec_moments
    return md

  @property
  def extras(self) -> dict[str, Any]:
    """What synthesis needs beyond the config and style names (see `metadata`)."""
    return {k: v for k, v in self.metadata().items() if k in ("conditioning", "spec_moments")}

  @classmethod
  def from_metadata(cls, md: dict[str, Any]) -> RunInfo:
    return cls(
      Config.from_dict(md["config"]),
      tuple(md["styles"]),
      md.get("preset", ""),
      Conditioning.from_dict(md.get("conditioning")),
      md.get("spec_moments"),
    )


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_DIR)


def saved_run(workdir: str) -> RunInfo | None:
  """The run recorded in `workdir`'s latest checkpoint, or None for a new run."""
  ckdir = checkpoint_dir(workdir)
  if not os.path.isdir(ckdir):
    return None
  with Checkpointer(ckdir, keep=1, read_only=True) as ck:
    if ck.latest_step() is None:
      return None
    return RunInfo.from_metadata(ck.read_metadata())


def restore_generator(workdir: str, step: int | None = None) -> tuple[RunInfo, Any, Any, int]:
  """The EMA generator of a run folder's checkpoint `step` (default: the latest).

  Only the EMA parameters are read from the checkpoint: not the generator being trained, the
  critics or the optimiser states, which synthesis does not need. Nothing is written (a read-only
  run folder can be read).

  Returns:
    (run, graph, ema_params, step): the run's description, the generator's graph definition, its
    EMA parameters (a pure dict of arrays, for `nnx.merge(graph, ema_params)`) and the step.

  Raises:
    ConfigError: `workdir` is not a folder, holds no checkpoint, or not that step.
  """
  if not os.path.isdir(workdir):
    raise ConfigError(f"{workdir}: no such run folder")
  # Read-only: a folder that holds no run is left exactly as it was (no empty checkpoints/).
  with Checkpointer(checkpoint_dir(workdir), keep=1, read_only=True) as ck:
    try:
      step = ck.latest_step() if step is None else int(step)
      run = RunInfo.from_metadata(ck.read_metadata(step))
      graph, abstract = abstract_generator(run.config.model)
      tree, _ = ck.restore({EMA_PARAMS: abstract}, step, partial=True)
    except CheckpointNotFoundError as e:
      if ck.latest_step() is not None:
        raise ConfigError(f"{workdir}: {e}") from None
      raise ConfigError(
        f"{workdir}: holds no run (no checkpoint; train one with `wavegan train --workdir`)"
      ) from None
  return run, graph, tree[EMA_PARAMS], int(step)
