"""Several label fields and continuous attributes: style vectors, and a tiny run end to end."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from wavegan.conditioning import Attribute, Conditioning
from wavegan.config import ConfigError, apply_overrides
from wavegan.presets import preset

SR = 16000
COND = Conditioning(
  fields=(("instrument", ("kick", "snare", "tom")), ("technique", ("hard", "soft"))),
  attributes=(Attribute("pitch", mean=7.0, std=1.0, log=True),),
)


def test_encode_by_field_attribute_and_mix():
  v = COND.encode(
    {"instrument": "snare", "technique": {"hard": 0.25, "soft": 0.75}, "pitch": 256.0}
  )
  np.testing.assert_allclose(v, [0, 1, 0, 0.25, 0.75, 1.0])  # log2(256) = 8: one std above 7
  # Values of the first field may be given directly; left-out fields are an equal mix, left-out
  # attributes the corpus mean.
  np.testing.assert_allclose(COND.encode({"kick": 0.5, "tom": 0.5}), [0.5, 0, 0.5, 0.5, 0.5, 0])
  np.testing.assert_allclose(COND.encode("tom"), [0, 0, 1, 0.5, 0.5, 0])
  np.testing.assert_array_equal(COND.encode({}), np.zeros(6))  # no style at all
  for bad, match in (
    ({"colour": "red"}, "unknown style key 'colour'"),
    ({"instrument": "gong"}, "unknown instrument 'gong'"),
    ({"pitch": -3.0}, "must be > 0"),
    ({"pitch": float("nan")}, "finite"),
  ):
    with pytest.raises(ConfigError, match=match):
      COND.encode(bad)


def test_vectors_round_trip_and_attribute_scale():
  ids = np.array([[2, 0], [0, 1]])
  attrs = np.array([[1.0], [np.nan]], np.float32)  # NaN: unknown, trained at the mean
  np.testing.assert_array_equal(COND.vectors(ids, attrs), [[0, 0, 1, 1, 0, 1], [1, 0, 0, 0, 1, 0]])
  assert Conditioning.from_dict(json.loads(json.dumps(COND.to_dict()))) == COND
  assert COND.groups == (3, 2) and COND.dim == 6 and not COND.simple
  a = Attribute.fit("pitch", np.array([100.0, 200.0, 400.0, np.nan]), log=True)
  assert a.mean == pytest.approx(np.log2(200.0))
  np.testing.assert_allclose(
    a.raw(a.standardize(np.array([150.0, 300.0]))), [150.0, 300.0], rtol=1e-5
  )
  assert np.isnan(a.standardize(np.array([np.nan]))[0])
  np.testing.assert_allclose(COND.for_first_field(np.array([1])), [[0, 1, 0, 0.5, 0.5, 0]])


def _corpus(root):
  """kick/snare folders of decaying tones at several pitches, and a manifest with a technique."""
  rows = ["path,technique"]
  t = np.arange(int(0.4 * SR)) / SR
  for style, base in (("kick", 60.0), ("snare", 240.0)):
    os.makedirs(root / style)
    for i in range(4):
      f = base * 2 ** (i / 4)
      tone = (0.5 * np.sin(2 * np.pi * f * t) * np.exp(-t / 0.15)).astype(np.float32)
      sf.write(root / style / f"{i}.wav", tone, SR)
      rows.append(f"{style}/{i}.wav,{'hard' if i % 2 else 'soft'}")
  (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_several_fields_and_pitch_train_resume_render_and_export(tmp_path):
  from wavegan.synthesis.render import RenderJob, render
  from wavegan.synthesis.synthesizer import Synthesizer
  from wavegan.training import loop as trainer

  _corpus(tmp_path / "pack")
  cfg = apply_overrides(
    preset("tiny"),
    [
      f"data.path={tmp_path / 'pack'}",
      f"data.manifest={tmp_path / 'pack' / 'labels.csv'}",
      "data.label_field=folder,technique",
      "data.attributes=pitch",
      "model.g_cond=film",
      "train.steps=2",
      "train.tensorboard=false",
      "data.prepare_workers=1",
    ],
  )
  logs = []
  run, _ = trainer.train(cfg, str(tmp_path / "run"), progress=False, log=logs.append)
  c = run.conditioning
  assert c.fields == (("folder", ("kick", "snare")), ("technique", ("hard", "soft")))
  assert c.attribute_names == ("pitch",)
  # The corpus' pitches are 60..101 Hz and 240..404 Hz: the log2 mean lies between.
  assert np.log2(60) < c.attributes[0].mean < np.log2(404)
  assert run.config.model.style_groups == (2, 2) and run.config.model.num_attributes == 1

  # Resuming keeps the conditioning and goes on.
  cfg3 = apply_overrides(cfg, ["train.steps=3"])
  run3, state = trainer.train(cfg3, str(tmp_path / "run"), progress=False, log=logs.append)
  assert int(state.step) == 3 and run3.conditioning == c

  synth = Synthesizer.from_workdir(str(tmp_path / "run"), batch_size=4)
  asked = {"folder": "snare", "technique": "hard", "pitch": 300.0}
  a = synth.generate(3, asked, seed=1)
  b = synth.generate(3, {"folder": "snare", "technique": "hard", "pitch": 80.0}, seed=1)
  assert a.shape == (3, 16384, 1) and np.all(np.isfinite(a))
  assert not np.allclose(a, b)  # the attribute reaches the generator
  # The exported file carries the conditioning: same audio from the same request.
  exported = Synthesizer.load(synth.export(str(tmp_path / "m.wgan")), batch_size=4)
  assert exported.conditioning == c
  np.testing.assert_array_equal(exported.generate(3, asked, seed=1), a)
  # Rendering accepts the same request as a table.
  report = render(
    synth,
    [RenderJob(name="j", count=2, seed=1, style=asked, filename="{style}_s{seed}_{index:04d}")],
    str(tmp_path / "out"),
  )
  assert report.written == 2
  files = sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".wav"))
  assert files == [
    "folder-snare-pitch300-technique-hard_s1_0000.wav",
    "folder-snare-pitch300-technique-hard_s1_0001.wav",
  ], files
  rendered, _ = sf.read(tmp_path / "out" / files[1], dtype="float32")
  np.testing.assert_allclose(rendered, a[1, :, 0], atol=1 / 32767 + 1e-6)

  # The evaluation measures how the generated pitch follows the asked one.
  from wavegan.evaluation.report import evaluate_run

  report = evaluate_run(str(tmp_path / "run"), n=8, out=str(tmp_path / "eval"), log=logs.append)
  r = report["attributes"]["pitch"]
  assert r["styles"] == ["kick", "snare"] and len(r["asked"]) == 5
  assert r["asked"] == sorted(r["asked"]) and 60 <= r["asked"][0] < r["asked"][-1] <= 404
  assert len(r["median"]) == 2 and all(len(row) == 5 for row in r["median"])
  assert 0.0 <= r["measured_share"] <= 1.0
  assert "Attribute pitch" in (tmp_path / "eval" / "report.md").read_text()
