"""The studio's model session (wavegan/studio.py), without a browser: takes, walks, favourites."""

from __future__ import annotations

import numpy as np
import pytest

from wavegan.cli import main
from wavegan.config import ConfigError
from wavegan.studio import MAX_CLIPS, Studio
from wavegan.synthesis import render
from wavegan.synthesis.synthesizer import Synthesizer, interpolation_path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  path = tmp_path_factory.mktemp("studio") / "run"
  args = ["train", "--workdir", str(path), "--preset", "tiny", "--steps", "1", "--no-progress"]
  assert main(args) == 0
  return path


@pytest.fixture(scope="module")
def studio(run, tmp_path_factory):
  return Studio.load(str(run), str(tmp_path_factory.mktemp("favourites")))


def test_a_take_is_what_render_makes_from_the_same_seed(studio, run):
  style = studio.style([0.5, 0.5] + [0.0] * (len(studio.styles) - 2))
  assert style == {studio.styles[0]: 0.5, studio.styles[1]: 0.5}
  take = studio.generate(7, 3, style)
  assert take.audio.shape == (3, studio.synth.model.slice_len, 1)
  synth = Synthesizer.load(str(run), batch_size=MAX_CLIPS)
  np.testing.assert_array_equal(take.audio, synth.generate(3, style, seed=7))
  assert studio.style([1.0] + [0.0] * (len(studio.styles) - 1)) == studio.styles[0]


def test_a_walk_runs_from_latent_0_of_one_seed_to_latent_0_of_the_other(studio):
  take = studio.walk(3, 4, 5, "slerp", studio.styles[0])
  ends = np.concatenate([studio.synth.latents(1, 3), studio.synth.latents(1, 4)])
  np.testing.assert_array_equal(take.latents, interpolation_path(ends, 5, "slerp"))
  np.testing.assert_array_equal(take.audio[0], studio.generate(3, 1, studio.styles[0]).audio[0])


def test_a_favourite_is_rerendered_bit_for_bit_from_its_manifest_row(studio, tmp_path):
  mix = studio.style([0.3, 0.0, 1.2] + [0.0] * (len(studio.styles) - 3))
  take = studio.generate(11, 4, mix)
  row = studio.keep(take, 2)
  walk = studio.walk(1, 2, 3, "linear", studio.styles[1])
  row2 = studio.keep(walk, 1)
  assert (row["file"], row2["file"]) == ("fav_0001.wav", "fav_0002.wav")
  assert row2["seed"] == "" and row["seed"] == 11 and row["latent_index"] == 2
  assert [r["file"] for r in studio.favourites()] == ["fav_0001.wav", "fav_0002.wav"]
  for r in render.read_manifest(studio.out_dir).values():  # as a user reads it back
    again = render.rerender(studio.synth, r, studio.out_dir, path=str(tmp_path / r["file"]))
    saved = open(f"{studio.out_dir}/{r['file']}", "rb").read()
    assert open(again, "rb").read() == saved
  index = open(f"{studio.out_dir}/index.html").read()
  assert index.count("<audio") == 2  # the folder's index page lists them


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda s: s.generate(float("nan"), 2, None), "seed nan"),
    (lambda s: s.generate(-1, 2, None), "seed -1"),
    (lambda s: s.generate(1.5, 2, None), "whole number"),
    (lambda s: s.generate(0, MAX_CLIPS + 1, None), "clips 9"),
    (lambda s: s.walk(0, 1, 1, "slerp", None), "steps 1"),
    (lambda s: s.walk(0, 1, 3, "spiral", None), "spiral"),
    (lambda s: s.style([float("inf")] + [0.0] * (len(s.styles) - 1)), "must be in"),
    (lambda s: s.style([0.0] * len(s.styles)), "every style weight is 0"),
    (lambda s: s.style([None] + [0.0] * (len(s.styles) - 1)), "must be a number"),
  ],
)
def test_hostile_controls_are_refused_in_one_line(studio, call, message):
  with pytest.raises(ConfigError, match=message) as err:
    call(studio)
  assert "\n" not in str(err.value)


def test_studio_command_refuses_bad_arguments_without_a_traceback(run, tmp_path, capsys):
  assert main(["studio"]) == 2
  assert main(["studio", "--workdir", str(run), "--port", "0"]) == 2
  assert main(["studio", "--model", str(tmp_path / "missing.wgan")]) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err and err.count("wavegan: error:") == 3
