"""The Synthesizer API and exported model files (wavegan/synthesis.py, wavegan/export.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_python

from wavegan import Synthesizer
from wavegan.config import ConfigError
from wavegan.presets import preset
from wavegan.synthesis.export import ModelFileError
from wavegan.synthesis.synthesizer import interpolation_path
from wavegan.training import step as ts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLES = ("clap", "kick", "snare")


def _tiny(num_styles: int):
  cfg = preset("tiny")
  return cfg.__class__(
    **{
      **cfg.__dict__,
      "model": cfg.model.__class__(**{**cfg.model.__dict__, "num_styles": num_styles}),
    }
  )


@pytest.fixture(scope="module")
def synth():
  cfg = _tiny(len(STYLES))
  _, state = ts.build(cfg, seed=3)
  return Synthesizer(cfg.model, STYLES, 16000, state.ema_params, batch_size=4)


def test_generate_is_deterministic_and_independent_of_n(synth):
  a = synth.generate(6, style="kick", seed=3)
  assert a.shape == (6, 16384, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(a, synth.generate(6, style="kick", seed=3))
  # Clip i of a seed does not depend on how many clips are asked for (or on batch padding).
  np.testing.assert_array_equal(a[:3], synth.generate(3, style="kick", seed=3))
  assert not np.array_equal(a, synth.generate(6, style="kick", seed=4))
  assert not np.array_equal(a, synth.generate(6, style="snare", seed=3))
  assert synth._generate._cache_size() == 1  # every call has the batch shape: compiled once


def test_style_forms_agree(synth):
  z = synth.latents(5, seed=1)
  kick = synth.from_latents(z, "kick")
  np.testing.assert_array_equal(synth.from_latents(z, {"kick": 1.0}), kick)
  np.testing.assert_array_equal(synth.from_latents(z, np.full(5, 1, np.int32)), kick)
  mix = synth.from_latents(z, {"kick": 0.7, "snare": 0.3})
  weights = np.tile(np.array([[0.0, 0.7, 0.3]], np.float32), (5, 1))
  np.testing.assert_array_equal(mix, synth.from_latents(z, weights))
  assert not np.allclose(mix, kick)
  # None takes every style in turn.
  every = synth.from_latents(z, None)
  np.testing.assert_array_equal(every, synth.from_latents(z, np.arange(5, dtype=np.int32) % 3))


def test_bad_styles_are_clear_errors(synth):
  with pytest.raises(ConfigError, match="unknown style 'cowbell'; valid: clap, kick, snare"):
    synth.generate(1, style="cowbell")
  with pytest.raises(ConfigError, match="unknown style 'tom'"):
    synth.generate(1, style={"kick": 0.5, "tom": 0.5})
  with pytest.raises(ConfigError, match="weights"):
    synth.from_latents(synth.latents(2), np.ones((2, 5), np.float32))


def test_interpolate_runs_between_the_endpoints(synth):
  z = synth.latents(2, seed=9)
  walk = synth.interpolate(z[0], z[1], 5, style="snare")
  assert walk.shape == (5, 16384, 1)
  ends = synth.from_latents(z, "snare")
  np.testing.assert_array_equal(walk[0], ends[0])
  np.testing.assert_array_equal(walk[-1], ends[1])
  path = interpolation_path(z, 5, "slerp")
  np.testing.assert_allclose(path[[0, -1]], z, atol=1e-6)
  np.testing.assert_allclose(
    np.linalg.norm(path, axis=1)[2], np.linalg.norm(z, axis=1).mean(), rtol=0.2
  )


def test_export_load_gives_identical_audio(synth, tmp_path):
  path = synth.export(str(tmp_path / "m.wgan"))
  loaded = Synthesizer.load(path, batch_size=4)
  assert loaded.styles == STYLES and loaded.sample_rate == 16000
  np.testing.assert_array_equal(
    loaded.generate(5, style="clap", seed=2), synth.generate(5, style="clap", seed=2)
  )


def test_tampered_truncated_or_foreign_files_are_refused(synth, tmp_path):
  path = synth.export(str(tmp_path / "m.wgan"))
  data = bytearray(open(path, "rb").read())
  data[-100] ^= 0x01  # one bit of one parameter
  (tmp_path / "tampered.wgan").write_bytes(bytes(data))
  with pytest.raises(ModelFileError, match="checksum"):
    Synthesizer.load(str(tmp_path / "tampered.wgan"))
  (tmp_path / "cut.wgan").write_bytes(bytes(data[: len(data) // 2]))
  with pytest.raises(ModelFileError, match="not a readable model file"):
    Synthesizer.load(str(tmp_path / "cut.wgan"))
  (tmp_path / "junk.wgan").write_bytes(os.urandom(4096))
  with pytest.raises(ModelFileError, match="not a readable model file"):
    Synthesizer.load(str(tmp_path / "junk.wgan"))
  with pytest.raises(ConfigError, match="no such run folder or model file"):
    Synthesizer.load(str(tmp_path / "missing.wgan"))


def test_model_file_loads_without_the_training_stack(synth, tmp_path):
  path = synth.export(str(tmp_path / "m.wgan"))
  code = (
    "import sys; from wavegan.synthesis.synthesizer import Synthesizer; "
    f"s = Synthesizer.load({path!r}, batch_size=2); a = s.generate(2, style='kick'); "
    "bad = [m for m in ('orbax', 'grain', 'checkpoints', 'data_pipelines', 'wavegan.training.step')"
    " if m in sys.modules]; "
    "assert not bad, bad; print(a.shape)"
  )
  res = run_python(code)
  assert res.returncode == 0, res.stderr
  assert "(2, 16384, 1)" in res.stdout


def test_unconditional_model_keeps_its_one_style_name(tmp_path):
  cfg = _tiny(0)
  _, state = ts.build(cfg)
  s = Synthesizer(cfg.model, ("kick",), 16000, state.ema_params, batch_size=2)
  np.testing.assert_array_equal(s.generate(2, style="kick"), s.generate(2))
  with pytest.raises(ConfigError, match="unconditional"):
    s.generate(1, style="snare")
