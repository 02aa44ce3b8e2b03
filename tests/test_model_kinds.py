"""Every model kind trains, checkpoints, resumes, renders and exports through the same commands."""

import json

import jax
import numpy as np
import pytest

from wavegan import dsp, inputs
from wavegan.config import apply_overrides
from wavegan.presets import preset
from wavegan.run import saved_run
from wavegan.synthesis.render import RenderJob, render
from wavegan.synthesis.synthesizer import Synthesizer
from wavegan.training import loop as trainer


def _train(workdir, *sets):
  cfg = apply_overrides(preset("tiny"), ["train.tensorboard=false", *sets])
  return trainer.train(cfg, str(workdir), progress=False, log=lambda _: None)


def test_specgan_moments_are_computed_stored_and_restored(tmp_path):
  run, _ = _train(tmp_path / "run", "model.kind=specgan", "train.steps=2", "model.gl_iters=4")
  # The moments are the corpus' per-bin log-magnitude statistics, computed without a separate step.
  _, data = inputs.load_data(run.config, log=lambda _: None)
  clips = data.cache.gather(np.arange(len(data.cache)))  # [N, T, 1]
  log_mag = np.asarray(jax.jit(dsp.log_magnitude)(clips[..., 0]))  # [N, 128, 128]
  want_mean, want_std = dsp.moments(log_mag)
  mean, std = dsp.moments_from_dict(run.spec_moments)
  assert mean.shape == std.shape == (128,)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(std, want_std, rtol=1e-4, atol=1e-4)
  # They are stored with the run: in every checkpoint's metadata, read back on resume.
  saved = saved_run(str(tmp_path / "run"))
  assert saved.spec_moments == run.spec_moments
  run3, state = _train(tmp_path / "run", "model.kind=specgan", "train.steps=3", "model.gl_iters=4")
  assert int(state.step) == 3 and run3.spec_moments == run.spec_moments

  # The run renders through Griffin-Lim, and its exported file carries the moments.
  _renders_and_exports_with_its_statistics(tmp_path, run)


def _renders_and_exports_with_its_statistics(tmp_path, run):
  """The run renders, and its exported file carries the statistics and renders the same."""
  synth = Synthesizer.from_workdir(str(tmp_path / "run"), batch_size=4)
  audio = synth.generate(3, "kick", seed=2)
  assert audio.shape == (3, 16384, 1) and np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1
  assert np.abs(audio).max() > 0
  exported = Synthesizer.load(synth.export(str(tmp_path / "m.wgan")), batch_size=4)
  assert exported.extras["spec_moments"] == run.spec_moments
  np.testing.assert_array_equal(exported.generate(3, "kick", seed=2), audio)
  report = render(
    exported, [RenderJob(name="k", count=2, seed=2, style="kick")], str(tmp_path / "out")
  )
  assert report.written == 2
  with open(tmp_path / "out" / "manifest.json") as f:
    assert len(json.load(f)) == 2


@pytest.mark.parametrize("name", ["complex", "ifspec"])
def test_phase_aware_kinds_train_resume_export_and_render(tmp_path, name):
  run, _ = _train(tmp_path / "run", f"model.kind={name}", "train.steps=2")
  mean, std = dsp.moments_from_dict(run.spec_moments)
  assert mean.shape == std.shape == (256,) and np.all(std > 0)  # 2 planes x 128 bins
  assert saved_run(str(tmp_path / "run")).spec_moments == run.spec_moments
  run3, state = _train(tmp_path / "run", f"model.kind={name}", "train.steps=3")
  assert int(state.step) == 3 and run3.spec_moments == run.spec_moments
  _renders_and_exports_with_its_statistics(tmp_path, run)


def test_waveform_model_with_extra_discriminators_resumes_and_renders(tmp_path):
  sets = ("model.aux_discs=msd", "model.aux_width=2", "optim.stft_weight=0.5", "train.steps=2")
  _, state = _train(tmp_path / "run", *sets)
  assert set(state.d_params) == {"main", "aux"}
  # Starting the finished run again restores every parameter, the extra critics' included.
  _, restored = _train(tmp_path / "run", *sets)
  assert int(restored.step) == 2
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  synth = Synthesizer.from_workdir(str(tmp_path / "run"), batch_size=4)
  assert render(synth, [RenderJob(name="all", count=3, seed=0)], str(tmp_path / "out")).written == 3
