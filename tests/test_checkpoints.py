"""Tests for `checkpoints.manager.Checkpointer` (orbax-backed, CPU, a few seconds)."""

from __future__ import annotations

import os
import pathlib
import random
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore as ts

from checkpoints import Checkpointer, CheckpointNotFoundError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step being written


def _state(seed: int) -> dict[str, Any]:
  """A small training-state-like tree: float32 weights, int32 scalars, key data, numpy."""
  rng = np.random.default_rng(seed)
  return {
    "params": {
      "conv": {"kernel": jnp.asarray(rng.standard_normal((25, 4, 8), dtype=np.float32))},
      "dense": {
        "kernel": jnp.asarray(rng.standard_normal((16, 8), dtype=np.float32)),
        "bias": jnp.asarray(rng.standard_normal((8,), dtype=np.float32)),
      },
    },
    "step": jnp.asarray(seed, dtype=jnp.int32),
    "rng": jax.random.key_data(jax.random.key(seed)),
    "ema": rng.standard_normal((3,), dtype=np.float32),
  }


def _abstract(tree: Any) -> Any:
  """ShapeDtypeStructs with shardings, as the trainer would build from `nnx.eval_shape`."""

  def leaf(x: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

  return jax.tree.map(leaf, tree)


def _assert_bitwise_equal(got: Any, want: Any) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g), np.asarray(w)
    assert g.dtype == w.dtype and g.shape == w.shape
    assert g.tobytes() == w.tobytes()


METADATA = {
  "config": {
    "model": {"slice_len": 16384, "dim": 64},
    "train": {"lr": 1e-4, "betas": [0.5, 0.9]},
  },
  "styles": ["drums", "piano", "speech"],
  "seed": 1234567890123,
  "ok": True,
  "note": None,
}


def test_save_restore_roundtrip_is_bitwise(tmp_path: pathlib.Path) -> None:
  state = _state(7)
  with Checkpointer(str(tmp_path / "ckpt")) as ckpt:
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert ckpt.save(7, state, METADATA) is True
    restored, meta = ckpt.restore(_abstract(state))
  _assert_bitwise_equal(restored, state)
  assert isinstance(restored["step"], jax.Array) and restored["step"].dtype == jnp.int32
  assert int(restored["step"]) == 7
  assert meta == METADATA and isinstance(meta["seed"], int)
  key = jax.random.wrap_key_data(restored["rng"])
  assert np.array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(7)))


def test_restore_from_concrete_template_and_explicit_step(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path), keep=5, async_save=False) as ckpt:
    ckpt.save(1, _state(1), {"step": 1})
    ckpt.save(2, _state(2), {"step": 2})
    zeros = jax.tree.map(jnp.zeros_like, _state(0))
    restored, meta = ckpt.restore(zeros, step=1)
    _assert_bitwise_equal(restored, jax.tree.map(jnp.asarray, _state(1)))
    assert meta == {"step": 1}
    assert ckpt.read_metadata() == {"step": 2}
    with pytest.raises(CheckpointNotFoundError, match="step 3"):
      ckpt.restore(zeros, step=3)


def test_keep_two_retains_last_two(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path), keep=2) as ckpt:
    for step in range(1, 5):
      assert ckpt.save(step, _state(step), {"step": step})
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4]
    assert ckpt.latest_step() == 4
  on_disk = sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit())
  assert on_disk == ["3", "4"]
  with Checkpointer(str(tmp_path), keep=2) as again:
    assert again.all_steps() == [3, 4]


def test_async_save_then_wait_is_visible_to_another_checkpointer(tmp_path: pathlib.Path) -> None:
  state = _state(3)
  ckpt = Checkpointer(str(tmp_path))
  try:
    assert ckpt.save(3, state, METADATA)
    ckpt.wait()
    assert (tmp_path / "3").is_dir()
    other = Checkpointer(str(tmp_path))
    assert other.latest_step() == 3
    restored, meta = other.restore(_abstract(state))
    _assert_bitwise_equal(restored, state)
    assert meta == METADATA
    other.close()
  finally:
    ckpt.close()
  ckpt.close()  # idempotent


def test_saving_existing_step_is_noop(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.save(5, _state(5), {"v": 1})
    assert ckpt.save(5, _state(6), {"v": 2}) is False
    restored, meta = ckpt.restore(_abstract(_state(5)))
  _assert_bitwise_equal(restored, _state(5))
  assert meta == {"v": 1}


def test_save_rejects_older_step_and_bad_metadata(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(TypeError, match="JSON"):
      ckpt.save(1, _state(1), {"array": np.zeros(2)})
    assert ckpt.all_steps() == []
    ckpt.save(4, _state(4), {})
    with pytest.raises(ValueError, match="older than the latest step 4"):
      ckpt.save(2, _state(2), {})


def test_nan_metadata_is_refused_before_anything_is_written(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(TypeError, match="JSON"):
      ckpt.save(1, _state(1), {"loss": float("nan")})
    assert ckpt.all_steps() == []


def test_read_only_creates_nothing_and_refuses_to_save(tmp_path: pathlib.Path) -> None:
  missing = tmp_path / "run" / "checkpoints"
  with Checkpointer(str(missing), read_only=True) as ckpt:
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    with pytest.raises(CheckpointNotFoundError):
      ckpt.read_metadata()
    with pytest.raises(ValueError, match="read-only"):
      ckpt.save(1, _state(1), {})
  assert list(tmp_path.iterdir()) == []
  with Checkpointer(str(tmp_path / "ck")) as ckpt:
    ckpt.save(3, _state(3), METADATA)
  before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
  with Checkpointer(str(tmp_path / "ck"), read_only=True) as ckpt:
    restored, meta = ckpt.restore(_abstract(_state(3)))
  _assert_bitwise_equal(restored, _state(3))
  assert meta == METADATA
  assert (
    sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
  )


def test_read_metadata_without_template(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(10, _state(10), {"config": {"a": 1}, "styles": ["x"]})
    ckpt.save(20, _state(20), METADATA)
  with Checkpointer(str(tmp_path)) as fresh:
    assert fresh.read_metadata() == METADATA
    assert fresh.read_metadata(10) == {"config": {"a": 1}, "styles": ["x"]}


def _delete_arrays(state_dir: pathlib.Path, keep_prefix: str) -> list[str]:
  """Deletes from a saved step's OCDBT store every array not named `keep_prefix...`.

  Orbax keeps a step's arrays in one key-value store: `<name>/.zarray` and chunks per array, named
  by their path with dots (`params.dense.kernel`). Returns the deleted names.
  """
  store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{state_dir}/"}).result()
  names = sorted({key.decode().split("/")[0] for key in store.list().result()})
  dropped = [n for n in names if not n.startswith(keep_prefix)]
  for name in dropped:
    store.delete_range(ts.KvStore.KeyRange(f"{name}/", f"{name}0")).result()  # "0" follows "/"
  return dropped


def test_partial_restore_reads_only_the_leaves_asked_for(tmp_path: pathlib.Path) -> None:
  state = _state(4)
  part = {"params": _abstract(state["params"])}
  with Checkpointer(str(tmp_path / "ck")) as ckpt:
    ckpt.save(4, state, METADATA)
    # In the writing process too (the save still in flight), before and after a full restore.
    _assert_bitwise_equal(ckpt.restore(part, partial=True)[0], {"params": state["params"]})
    _assert_bitwise_equal(ckpt.restore(_abstract(state))[0], state)
    _assert_bitwise_equal(ckpt.restore(part, partial=True)[0], {"params": state["params"]})
  bare = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), part["params"])}
  dropped = _delete_arrays(tmp_path / "ck" / "4" / "state", "params.")
  assert dropped == ["ema", "rng", "step"]
  before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
  with Checkpointer(str(tmp_path / "ck"), read_only=True) as ckpt:
    with pytest.raises(ValueError, match="does not exist"):  # the rest is gone
      ckpt.restore(_abstract(state))
    restored, meta = ckpt.restore(part, partial=True)
    _assert_bitwise_equal(restored, {"params": state["params"]})
    assert meta == METADATA
    # Leaves with a sharding land there; those without are replicated.
    kernel = restored["params"]["dense"]["kernel"]
    assert kernel.sharding == part["params"]["dense"]["kernel"].sharding
    restored, _ = ckpt.restore(bare, step=4, partial=True)
    _assert_bitwise_equal(restored, {"params": state["params"]})
    assert restored["params"]["dense"]["kernel"].sharding.is_fully_replicated
    # A leaf the checkpoint does not hold is an error, not the template handed back.
    missing = {"params": {"dense": {"gamma": jax.ShapeDtypeStruct((8,), jnp.float32)}}}
    with pytest.raises(KeyError, match="holds no params/dense/gamma"):
      ckpt.restore(missing, partial=True)
  after = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
  assert after == before


def test_no_checkpoint_raises_with_directory(tmp_path: pathlib.Path) -> None:
  directory = tmp_path / "does" / "not" / "exist"
  with Checkpointer(str(directory)) as ckpt:
    assert directory.is_dir()  # created
    for call in (lambda: ckpt.restore(_abstract(_state(0))), ckpt.read_metadata):
      with pytest.raises(CheckpointNotFoundError) as info:
        call()
      message = str(info.value)
      assert str(directory) in message and "\n" not in message
  assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def test_relative_directory_is_made_absolute(
  tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  monkeypatch.chdir(tmp_path)
  with Checkpointer("rel/ckpt") as ckpt:
    assert ckpt.directory == str(tmp_path / "rel" / "ckpt")
    ckpt.save(1, _state(1), {})
  assert (tmp_path / "rel" / "ckpt" / "1").is_dir()


def test_unfinalised_tmp_dir_is_ignored_and_overwritten(tmp_path: pathlib.Path) -> None:
  with Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, _state(1), {"step": 1})
  # What a kill mid-save leaves behind: a complete-looking but unrenamed step 2.
  shutil.copytree(tmp_path / "1", tmp_path / f"2{TMP_SUFFIX}")
  (tmp_path / f"3{TMP_SUFFIX}").mkdir()  # and an empty one
  with Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
    restored, _ = ckpt.restore(_abstract(_state(1)))
    _assert_bitwise_equal(restored, _state(1))
    assert ckpt.save(2, _state(2), {"step": 2})  # the stale tmp dir is replaced
  with Checkpointer(str(tmp_path)) as ckpt:
    restored, meta = ckpt.restore(_abstract(_state(2)))
  _assert_bitwise_equal(restored, _state(2))
  assert meta == {"step": 2}


def _run_child(
  code: str, *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen:
  """Starts `python -c code args...` from the repo root with this interpreter."""
  full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu", **(env or {})}
  return subprocess.Popen(
    [sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO_ROOT, env=full_env, **kwargs
  )


_MULTI_DEVICE_SAVER = """
  import sys
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  from checkpoints import Checkpointer
  assert jax.device_count() == 4, jax.devices()
  mesh = Mesh(np.array(jax.devices()), ("data",))
  w = jnp.arange(32, dtype=jnp.float32).reshape(8, 4)
  state = {"w": jax.device_put(w, NamedSharding(mesh, PartitionSpec("data"))),
           "step": jnp.int32(9)}
  with Checkpointer(sys.argv[1]) as ckpt:
    ckpt.save(9, state, {"devices": 4})
"""


def test_restore_saved_on_four_devices_into_one(tmp_path: pathlib.Path) -> None:
  child = _run_child(
    _MULTI_DEVICE_SAVER,
    str(tmp_path),
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  out, _ = child.communicate(timeout=60)
  assert child.returncode == 0, out.decode()
  want = np.arange(32, dtype=np.float32).reshape(8, 4)
  device = jax.devices()[0]
  with Checkpointer(str(tmp_path)) as ckpt:
    # Template with a sharding: lands exactly there.
    single = jax.sharding.SingleDeviceSharding(device)
    template = {
      "w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=single),
      "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=single),
    }
    state, meta = ckpt.restore(template)
    assert state["w"].sharding == single and np.array_equal(state["w"], want)
    assert int(state["step"]) == 9 and meta == {"devices": 4}
    # Template without shardings: the 4-device layout does not exist here, so replicate.
    bare = {
      "w": jax.ShapeDtypeStruct((8, 4), jnp.float32),
      "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    state, _ = ckpt.restore(bare)
    assert np.array_equal(state["w"], want)
    assert state["w"].sharding.is_fully_replicated


_KILLED_SAVER = """
  import sys
  import jax.numpy as jnp, numpy as np
  from checkpoints import Checkpointer

  def state(step):
    w = np.random.default_rng(step).standard_normal(1 << 21, dtype=np.float32)  # 8 MB
    return {"w": jnp.asarray(w), "step": jnp.int32(step)}

  ckpt = Checkpointer(sys.argv[1], keep=2, async_save=True)
  for step in range(1, 100_000):
    ckpt.save(step, state(step), {"step": step})
    if step == 1:
      ckpt.wait()
      print("committed", flush=True)
"""


def test_sigkill_during_async_saves_leaves_restorable_latest(tmp_path: pathlib.Path) -> None:
  child = _run_child(_KILLED_SAVER, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    ready, _, _ = select.select([child.stdout], [], [], 60)  # never hang the suite
    line = child.stdout.readline().decode().strip() if ready else "<timeout>"
    assert line == "committed", child.stderr.read().decode() if child.poll() is not None else line
    time.sleep(random.uniform(0.05, 0.6))  # land anywhere in the save / write / delete cycle
    assert child.poll() is None, "saver exited before it was killed"
    child.send_signal(signal.SIGKILL)
  finally:
    child.kill()
    child.wait(timeout=30)
    child.stdout.close()
    child.stderr.close()
  assert child.returncode == -signal.SIGKILL

  with Checkpointer(str(tmp_path), keep=2) as ckpt:
    latest = ckpt.latest_step()
    assert latest is not None and latest >= 1
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = {
      "w": jax.ShapeDtypeStruct((1 << 21,), jnp.float32, sharding=single),
      "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    state, meta = ckpt.restore(template)
  want = np.random.default_rng(latest).standard_normal(1 << 21, dtype=np.float32)
  assert meta == {"step": latest}
  assert int(state["step"]) == latest
  assert np.asarray(state["w"]).tobytes() == want.tobytes()
