"""Multi-process training through JAX's own runtime (`jax.distributed`), nothing home-made.

One process per host (or per GPU, as SLURM launches them) joins the job; afterwards `jax.devices()`
lists every device of every process, the trainer's mesh spans them all, and XLA runs the
gradient all-reduce across hosts. Each process reads its own rows of every global batch
(`BatchSource` shards by `jax.process_index()`), orbax writes and restores checkpoints
collectively, and only process 0 writes logs, metrics and previews.

`initialize` must run before anything touches a device:

* explicit: `wavegan train --coordinator HOST:PORT --num-processes N --process-id I`;
* automatic on Cloud TPU VMs of a multi-host slice and under SLURM (`srun`), where
  `jax.distributed.initialize()` finds the coordinator and ranks itself;
* otherwise single-process, as before.

On CPU, cross-process collectives need gloo (`jax_cpu_collectives_implementation`), set here;
that is what lets the two-process test run on one machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from wavegan.config import ConfigError

T = TypeVar("T")


def auto_detected() -> str:
  """The cluster environment `jax.distributed.initialize()` can join by itself, or ""."""
  if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
    return "SLURM"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "a multi-host TPU slice"
  return ""


def initialize(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  log: Callable[[str], None] = print,
) -> bool:
  """Joins a multi-process job; returns whether one was joined.

  Args:
    coordinator: HOST:PORT of process 0's coordination service (all processes give the same).
    num_processes: processes in the job.
    process_id: this process' rank, 0 .. num_processes - 1.
    log: where the one-line summary goes (process 0 only).

  Raises:
    ConfigError: some but not all of the three explicit arguments, or a bad rank.
  """
  explicit = (coordinator, num_processes, process_id)
  given = [a is not None for a in explicit]
  if any(given) and not all(given):
    raise ConfigError("--coordinator, --num-processes and --process-id go together")
  import jax  # pylint: disable=g-import-not-at-top

  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f"--process-id {process_id}: must be in [0, {num_processes})")
    if ":" not in coordinator:
      raise ConfigError(f"--coordinator {coordinator}: expected HOST:PORT")
    _cpu_collectives(jax)
    jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
  elif auto_detected():
    _cpu_collectives(jax)
    jax.distributed.initialize()
  else:
    return False
  if jax.process_index() == 0:
    log(
      f"joined a {jax.process_count()}-process job: {jax.device_count()} devices "
      f"({jax.local_device_count()} here)"
    )
  return True


def _cpu_collectives(jax) -> None:
  """gloo for cross-process collectives on CPU (GPU and TPU bring their own)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_main() -> bool:
  """Whether this process writes files and logs (process 0, or the only one)."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index() == 0


def main_first(fn: Callable[[], T], name: str) -> T:
  """`fn()` in process 0, then in the others once it is done.

  For work that writes shared files (preparing a corpus, training the reference classifier): the
  other processes find them ready on a shared file system, or make their own copy on a local one,
  instead of writing the same files at once.
  """
  if is_main():
    out = fn()
  barrier(name)
  if not is_main():
    out = fn()
  return out


def barrier(name: str) -> None:
  """Waits until every process gets here (a no-op in a single-process job)."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)
