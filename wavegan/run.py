"""The run folder: its config and data description (`RunInfo`), its checkpoints, and reading them back."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from checkpoints import Checkpointer
from wavegan.conditioning import Conditioning
from wavegan.config import Config

CHECKPOINT_DIR = "checkpoints"


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
