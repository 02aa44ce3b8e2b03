"""Reading a run folder back (wavegan/run.py): the EMA generator alone, for synthesis."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest
import tensorstore as ts
from conftest import run_python

from checkpoints import Checkpointer
from wavegan.config import ConfigError, apply_overrides
from wavegan.presets import preset
from wavegan.run import EMA_PARAMS, checkpoint_dir, restore_generator, saved_run
from wavegan.synthesis.synthesizer import Synthesizer
from wavegan.training import loop as trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
  """A tiny run trained for two steps (one checkpoint, at step 2)."""
  path = str(tmp_path_factory.mktemp("run") / "run")
  cfg = apply_overrides(preset("tiny"), ["train.tensorboard=false", f"train.steps={STEPS}"])
  trainer.train(cfg, path, progress=False, log=lambda _: None)
  return path


def _full_restore(workdir: str) -> dict:
  """The whole training state, as resuming training reads it."""
  with Checkpointer(checkpoint_dir(workdir), keep=1, read_only=True) as ck:
    tree, _ = ck.restore(trainer.abstract_state(saved_run(workdir).config))
  return tree


def _assert_bitwise_equal(got, want) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g), np.asarray(w)
    assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()


def _drop_all_but_the_ema_generator(workdir: str) -> list[str]:
  """Deletes every array but the EMA generator's from the checkpoint's store; returns their names.

  Orbax keeps a step's arrays in one OCDBT key-value store, `<name>/.zarray` and chunks per array
  (`g_opt.0.mu/0`, ...).
  """
  (step,) = os.listdir(checkpoint_dir(workdir))
  state = os.path.join(checkpoint_dir(workdir), step, "state")
  store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{state}/"}).result()
  names = sorted({key.decode().split("/")[0] for key in store.list().result()})
  dropped = [n for n in names if not n.startswith(EMA_PARAMS + ".")]
  for name in dropped:
    store.delete_range(ts.KvStore.KeyRange(f"{name}/", f"{name}0")).result()  # "0" follows "/"
  return dropped


def test_restore_generator_gives_the_ema_params_of_the_full_restore(workdir):
  run, graph, ema, step = restore_generator(workdir)
  assert step == STEPS and run == saved_run(workdir)
  _assert_bitwise_equal(ema, _full_restore(workdir)[EMA_PARAMS])
  assert graph is not None and sum(x.size for x in jax.tree.leaves(ema)) > 0
  # An explicit step is the same as the latest; a missing one is named.
  _assert_bitwise_equal(restore_generator(workdir, step=STEPS)[2], ema)
  with pytest.raises(ConfigError, match="no checkpoint for step 7"):
    restore_generator(workdir, step=7)


def test_synthesis_reads_neither_the_critic_nor_the_optimisers(workdir, tmp_path):
  """A checkpoint stripped of everything but the EMA generator still renders the same audio;
  resuming training from it cannot."""
  want = Synthesizer.from_workdir(workdir, batch_size=4).generate(3, seed=5)
  stripped = str(tmp_path / "stripped")
  shutil.copytree(workdir, stripped)
  dropped = _drop_all_but_the_ema_generator(stripped)
  assert {n.split(".")[0] for n in dropped} == {
    "g_params",
    "d_params",
    "g_opt",
    "d_opt",
    "step",
    "aug_p",
  }

  with pytest.raises(Exception):  # noqa: B017 - whatever orbax raises for missing arrays
    _full_restore(stripped)
  synth = Synthesizer.from_workdir(stripped, batch_size=4)
  assert synth.info["step"] == STEPS
  np.testing.assert_array_equal(synth.generate(3, seed=5), want)


def test_a_read_only_run_folder_renders(workdir, tmp_path):
  run = tmp_path / "read_only"
  shutil.copytree(workdir, run)
  paths = [run, *run.rglob("*")]
  before = sorted((str(p), p.stat().st_mtime_ns) for p in paths)
  for p in paths:
    p.chmod(0o555 if p.is_dir() else 0o444)
  try:
    audio = Synthesizer.from_workdir(str(run), batch_size=4).generate(2, seed=1)
    after = sorted((str(p), p.stat().st_mtime_ns) for p in [run, *run.rglob("*")])
  finally:
    for p in paths:
      p.chmod(0o755 if p.is_dir() else 0o644)
  assert audio.shape == (2, 16384, 1)
  assert after == before


def test_synthesis_from_a_run_does_not_import_training(workdir):
  code = (
    "import sys; from wavegan.synthesis.synthesizer import Synthesizer; "
    f"a = Synthesizer.load({workdir!r}, batch_size=2).generate(2); "
    "bad = [m for m in sys.modules if m.split('.')[0] in ('grain', 'data_pipelines') "
    "or m.startswith(('wavegan.training', 'wavegan.inputs'))]; "
    "assert not bad, bad; print(a.shape)"
  )
  res = run_python(code)
  assert res.returncode == 0, res.stderr
  assert "(2, 16384, 1)" in res.stdout
