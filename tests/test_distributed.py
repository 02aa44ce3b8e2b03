"""Multi-process training on one machine: two processes over localhost (CPU collectives via gloo)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from checkpoints import Checkpointer
from wavegan.config import ConfigError
from wavegan.run import RunInfo, checkpoint_dir
from wavegan.training import distributed
from wavegan.training.loop import abstract_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# optim.eps=1e-3: with Adam's default 1e-8, an update is about lr * sign(gradient) even where the
# gradient is ~0, so the all-reduce's summation order (another device layout sums in another
# order) can flip single updates and the runs drift apart by learning-rate steps (measured: 5-13%
# of parameters off by more than 1e-5 after 3 steps). A larger eps keeps rounding differences at
# rounding size (measured: at most 1.5e-8), so the comparison below can be tight.
# Measured margin: each layout is bitwise reproducible, with or without both cores kept busy by
# other processes (3 runs of each, bit-identical metrics), and the 2 x 4 run's losses differ from
# the 1 x 8 run's by at most 4.3e-7 relative (230x inside rel=1e-4), its parameters by at most 2% of
# the rtol/atol allowance. A larger gap means the runs computed something different (other
# batches, a bad resume), not rounding: find it rather than loosen the tolerances.
# compute.conv=direct for the same reason: Winograd's transforms cancel large terms, so the
# all-reduce's order changes its kernel gradients by float32 rounding of those terms, not of the
# result (measured: the 2 x 4 and 1 x 8 runs' step-1 losses 2e-6 apart, relative), and the
# GAN's next updates grow that to 1e-3 by step 2: far outside the tolerance, which has to stay
# tight to catch a wrong reduction or resume.
# Winograd itself is checked against the direct form in tests/test_winograd.py.
TINY = [
  "--preset",
  "tiny",
  "--no-progress",
  "--set",
  "train.tensorboard=false",
  "--set",
  "train.checkpoint_every=2",
  "--set",
  "data.prepare_workers=1",
  "--set",
  "train.batch_size=8",
  "--set",
  "optim.eps=1e-3",
  "--set",
  "compute.conv=direct",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
  )
  return env


def _train(workdir, steps: int, *, processes: int, devices_each: int) -> list[str]:
  """Runs `wavegan train` as `processes` processes of `devices_each` CPU devices; their stderr."""
  cmd = [
    sys.executable,
    "-m",
    "wavegan.cli",
    "train",
    "--workdir",
    str(workdir),
    "--steps",
    str(steps),
    *TINY,
  ]
  if processes == 1:
    procs = [
      subprocess.Popen(
        cmd,
        env=_env(devices_each),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    ]
  else:
    port = _free_port()
    procs = [
      subprocess.Popen(
        cmd
        + [
          "--coordinator",
          f"localhost:{port}",
          "--num-processes",
          str(processes),
          "--process-id",
          str(i),
        ],
        env=_env(devices_each),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
      for i in range(processes)
    ]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append(err)
  return outs


def _restore(workdir, step: int | None = None):
  with Checkpointer(checkpoint_dir(str(workdir)), keep=1) as ck:
    run = RunInfo.from_metadata(ck.read_metadata())
    tree, md = ck.restore(abstract_state(run.config), step)
  return tree, md


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _assert_same_params(a_dir, b_dir, step: int) -> None:
  a, _ = _restore(a_dir, step)
  b, _ = _restore(b_dir, step)
  assert int(a["step"]) == int(b["step"]) == step
  for part in ("ema_params", "g_params", "d_params"):
    for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])):
      np.testing.assert_allclose(
        np.asarray(x),
        np.asarray(y),
        rtol=1e-5,
        atol=1e-7,
        err_msg=f"{a_dir} vs {b_dir}: step {step} {part}",
      )


def _assert_same_run(a_dir, b_dir):
  """Two 3-step runs saw the same batches and computed the same updates."""
  # The step-2 state first: the one a resume starts from, so a run that only goes wrong after its
  # resume fails at step 3, not here.
  _assert_same_params(a_dir, b_dir, 2)
  a_metrics, b_metrics = _metrics(a_dir), _metrics(b_dir)
  assert [m["step"] for m in a_metrics] == [m["step"] for m in b_metrics] == [1, 2, 3]
  for a, b in zip(a_metrics, b_metrics):
    for key in ("d/loss", "g/loss", "d/gp"):
      assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a_dir, a["step"], key)
  _assert_same_params(a_dir, b_dir, 3)


def test_two_processes_and_other_device_counts_match_one_run(tmp_path):
  # Reference: one process with 8 devices trains steps 1-3 (checkpoints at 2 and 3).
  _train(tmp_path / "one", 3, processes=1, devices_each=8)
  # Two processes x 4 devices: steps 1-2, checkpoint, then resume (both processes) to step 3.
  logs = _train(tmp_path / "two", 2, processes=2, devices_each=4)
  assert "joined a 2-process job: 8 devices (4 here)" in logs[0]
  assert "joined" not in logs[1] and "files used" not in logs[1]  # process 0 speaks for the job
  logs = _train(tmp_path / "two", 3, processes=2, devices_each=4)
  assert "resuming" in logs[0]
  _assert_same_run(tmp_path / "two", tmp_path / "one")
  # The reference's 8-device checkpoint at step 2 resumes on one device and continues to step 3
  # as the 8 devices did.
  shutil.copytree(
    tmp_path / "one",
    tmp_path / "one_device",
    ignore=lambda d, names: ["3"] if d.endswith("checkpoints") else [],
  )
  logs = _train(tmp_path / "one_device", 3, processes=1, devices_each=1)
  assert "resuming" in logs[0]
  _assert_same_run(tmp_path / "one_device", tmp_path / "one")


def test_initialize_arguments_go_together():
  with pytest.raises(ConfigError, match="go together"):
    distributed.initialize("localhost:1234", None, None)
  with pytest.raises(ConfigError, match="must be in"):
    distributed.initialize("localhost:1234", 2, 2)
  assert distributed.initialize() is False or distributed.auto_detected()
