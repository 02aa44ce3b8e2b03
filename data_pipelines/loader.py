"""The training input pipeline on grain: step batches read ahead in threads or worker processes.

Element s of the underlying `grain.MapDataset` is everything training step s consumes
(`BatchSource.get(s)`: n_critic batches gathered from the clip store), so the pipeline has random
access by step and its position is simply the next step. The loader's grain iterator state goes
into every checkpoint; restoring it resumes with exactly the batches an uninterrupted run would
have seen.

Only numpy and grain here: the trainer places batches on devices. (grain imports jax, so it is
imported only when a pipeline is built: decoding and preparing stay free of it.)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from data_pipelines.batches import BatchSource

if TYPE_CHECKING:
  import grain


class _StepRecords:
  """Random-access view of a `BatchSource`: record s is the batches of step s (endless)."""

  def __init__(self, source: BatchSource):
    self.source = source

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    audio, labels = self.source.get(int(step))  # [G, b, T, C], [G, b]
    return {"audio": audio, "labels": labels}


def _parse_absl_flags() -> None:
  """grain's worker processes read absl flags; a program that never parsed them gets defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top  (a grain dependency)

  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1], known_only=True)


def step_dataset(
  source: BatchSource, start_step: int = 0, *, workers: int = 0, prefetch: int = 2
) -> grain.IterDataset:
  """The grain pipeline over the steps of `source`, from step `start_step` on.

  Args:
    source: what each step reads.
    start_step: the first step.
    workers: worker processes reading ahead (0: background threads in this process; the
      gathers are numpy copies, so threads suffice unless the store is slow to read).
    prefetch: steps read ahead (per worker with `workers`).

  Returns:
    An iterable dataset of {"audio": float32 [G, b, T, C], "labels": int32 [G, b]}.
  """
  if workers < 0 or prefetch < 0 or start_step < 0:
    raise ValueError(
      f"start_step={start_step}, workers={workers}, prefetch={prefetch}: must be >= 0"
    )
  import grain  # pylint: disable=g-import-not-at-top

  records = grain.MapDataset.source(_StepRecords(source))[start_step:]
  if workers == 0:
    return records.to_iter_dataset(
      grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=prefetch)
    )
  _parse_absl_flags()
  return records.to_iter_dataset(
    grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)
  ).mp_prefetch(
    grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch))
  )


class Loader:
  """Iterates the step batches of a `BatchSource` through grain, from a step or a saved state.

  Attributes:
    step: the step whose batches `next()` returns.
    restored: whether the grain iterator state given to the constructor was used.
  """

  def __init__(
    self,
    source: BatchSource,
    *,
    start_step: int = 0,
    state: dict[str, Any] | None = None,
    workers: int = 0,
    prefetch: int = 2,
  ):
    """Builds the loader.

    Args:
      source: what each step reads.
      start_step: the first step to read.
      state: a `state()` saved at `start_step` (from a checkpoint); restores the grain iterator.
        Ignored, with the position taken from `start_step` alone, when it was saved at another
        step or by a differently built pipeline (another worker count).
      workers: see `step_dataset`.
      prefetch: see `step_dataset`.
    """
    self.restored = (
      state is not None and state.get("step") == start_step and state.get("workers") == workers
    )
    # The pipeline starts where the run it continues started it; the grain state moves it on.
    self._first = int(state["first_step"]) if self.restored else start_step
    self._workers = workers
    self._iter = iter(step_dataset(source, self._first, workers=workers, prefetch=prefetch))
    if self.restored:
      self._iter.set_state(state["grain"])
    self.step = start_step

  def __iter__(self) -> Loader:
    return self

  def __next__(self) -> tuple[np.ndarray, np.ndarray]:
    """(audio float32 [G, b, T, C], labels int32 [G, b]) of step `self.step`; then advances."""
    record = next(self._iter)
    self.step += 1
    if self._workers:
      # Worker batches arrive in shared memory, freed when the last view of it goes; a private
      # copy (~10 MB a paper-size step) lets grain free it now instead of at exit.
      return np.array(record["audio"]), np.array(record["labels"])
    return record["audio"], record["labels"]

  def state(self) -> dict[str, Any]:
    """JSON-serialisable position, to store in a checkpoint taken at step `self.step`."""
    return {
      "step": self.step,
      "first_step": self._first,
      "workers": self._workers,
      "grain": self._iter.get_state(),
    }

  def close(self) -> None:
    """Stops worker processes and threads."""
    close = getattr(self._iter, "close", None)
    if close is not None:
      close()
    self._iter = None
