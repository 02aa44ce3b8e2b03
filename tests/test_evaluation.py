"""Reference classifier and evaluation: accuracy, real vs noise, reports (wavegan/evaluation.py)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os

import numpy as np
import pytest

from wavegan import files, inputs
from wavegan.cli import main
from wavegan.errors import DiskFullError
from wavegan.evaluation import scores as evaluation
from wavegan.evaluation.classifier import ClassifierConfig, held_out_mask, load_classifier
from wavegan.evaluation.report import markdown, write_report
from wavegan.files import FILE_MODE, PART_SUFFIX
from wavegan.presets import preset
from wavegan.synthesis import previews

SMALL = ClassifierConfig(steps=120, width=8)


@pytest.fixture(scope="module")
def corpus():
  cfg = preset("demo")
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, builtin_per_class=32))
  _, data = inputs.load_data(cfg, log=lambda _: None)
  return data


@pytest.fixture(scope="module")
def ref(corpus):
  return evaluation.reference(corpus, cfg=SMALL, log=lambda _: None)


def test_classifier_learns_the_builtin_styles_on_a_cpu(corpus, ref):
  assert corpus.cache.path.startswith(os.environ["WAVEGAN_CACHE"])  # not the user's cache
  assert ref.classifier.classes == ("clap", "hat", "kick", "pluck", "snare", "tom")
  assert ref.test_idx.size >= 30 and ref.train_idx.size >= 120
  assert not set(ref.test_idx) & set(ref.train_idx)
  assert ref.classifier.held_out_accuracy >= 0.9
  assert ref.train_emb.shape == (ref.train_idx.size, 128)


def test_split_keeps_each_source_file_on_one_side():
  sources = ("a.wav",) * 5 + ("b.wav",) * 3 + tuple(f"c{i}.wav" for i in range(200))
  held = held_out_mask(sources)
  assert len(set(held[:5])) == 1 and len(set(held[5:8])) == 1
  assert 0.1 < held.mean() < 0.3
  np.testing.assert_array_equal(held, held_out_mask(sources))


def test_classifier_is_cached_by_corpus_content(corpus, ref):
  folders = os.listdir(os.path.join(corpus.cache.path, evaluation.CLASSIFIER_DIR))
  assert len(folders) == 1
  cached = load_classifier(os.path.join(corpus.cache.path, evaluation.CLASSIFIER_DIR, folders[0]))
  assert cached.held_out_accuracy == ref.classifier.held_out_accuracy
  audio = corpus.cache.gather(ref.test_idx[:4])
  np.testing.assert_allclose(cached.predict(audio)[0], ref.classifier.predict(audio)[0], atol=1e-6)
  again = evaluation.reference(corpus, cfg=SMALL, log=lambda msg: pytest.fail(f"retrained: {msg}"))
  assert again.classifier.held_out_accuracy == ref.classifier.held_out_accuracy
  # Other settings are another key: a second classifier next to the first.
  other = dataclasses.replace(SMALL, steps=5)
  evaluation.reference(corpus, cfg=other, log=lambda _: None)
  assert len(os.listdir(os.path.join(corpus.cache.path, evaluation.CLASSIFIER_DIR))) == 2


def test_real_held_out_beats_noise_on_every_metric(corpus, ref):
  real = evaluation.score_set(
    ref, corpus.cache.gather(ref.test_idx), ref.test_labels, probs=ref.test_probs, emb=ref.test_emb
  )
  n = ref.test_idx.size
  noise = evaluation.score_set(ref, evaluation.noise_clips(n, (16384, 1)), ref.test_labels)
  assert real["style_accuracy"] >= 0.9 > 0.5 > noise["style_accuracy"]
  assert real["inception_score"] > 2 * noise["inception_score"]
  assert real["fd"] * 5 < noise["fd"]
  assert real["kid"] * 5 < noise["kid"]
  assert real["ndb_over_k"] < noise["ndb_over_k"]
  assert real["nn_distance"] * 2 < noise["nn_distance"]
  assert real["silent_rate"] == noise["silent_rate"] == 0.0


def test_train_evaluate_plot_on_a_tiny_run(tmp_path, capsys):
  run = tmp_path / "run"
  assert (
    main(
      [
        "train",
        "--workdir",
        str(run),
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--set",
        "eval.every=2",
        "--no-progress",
      ]
    )
    == 0
  )
  records = [json.loads(line) for line in open(run / "metrics.jsonl")]
  evals = [r["step"] for r in records if "eval/fd" in r]
  assert evals == [0, 2]  # the untrained generator, then every eval.every steps
  assert all("eval/style_acc" in r and "eval/kid" in r for r in records if "eval/fd" in r)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tensorboard"))

  assert main(["evaluate", "--workdir", str(run), "--n", "24", "--out", str(tmp_path / "ev")]) == 0
  report = json.loads((tmp_path / "ev" / "report.json").read_text())
  assert report["step"] == 2 and report["n"] == 24
  for part in ("generated", "real_held_out", "noise"):
    assert set(report[part]) >= {
      "fd",
      "kid",
      "ndb_over_k",
      "nn_distance",
      "silent_rate",
      "clipped_rate",
      "inception_score",
      "style_accuracy",
      "style_accuracy_per_style",
    }, part
  assert report["classifier"]["held_out_accuracy"] is not None
  spectrum = report["spectrum"]  # real held-out clips are shaped like the training clips
  assert spectrum["real_held_out"] < spectrum["noise"], spectrum
  md = (tmp_path / "ev" / "report.md").read_text()
  assert "| Frechet distance | lower |" in md and "Memorisation check" in md
  assert "| spectral shape distance (dB) |" in md
  attack = report["attack"]  # per style, real drums rise in a few milliseconds
  assert set(attack["rise_ms"]["real_held_out"]) == set(report["styles"])
  assert 0 < attack["rise_ms"]["real_held_out"]["kick"] < 5
  assert "## Attack" in md and "| kick |" in md
  for png in ("spectrograms.png", "style_accuracy.png", "curves.png"):
    assert (tmp_path / "ev" / png).stat().st_size > 5000
  page = (tmp_path / "ev" / "report.html").read_text()  # played in Chromium: test_browser.py
  assert page.count("<audio") == 4 * page.count('class="label"') > 4 * len(report["styles"])
  assert "Frechet distance" in page and "training curves" in page
  preview = (run / "previews" / "step_0000002" / "report.html").read_text()
  assert preview.count("<audio") == 2 * len(report["styles"])  # one generated, one real each
  assert "report:" in capsys.readouterr().out

  assert main(["plot", "--workdir", str(run)]) == 0
  assert (run / "curves.png").stat().st_size > 10000
  assert main(["plot", "--workdir", str(tmp_path / "nothing")]) == 2


def _tiny_report() -> dict:
  scores = {"fd": 1.5, "kid": float("nan"), "nn_distance": 2.0, "silent_rate": 0.0}
  return {
    "run": "run",
    "step": 3,
    "n": 4,
    "seed": 0,
    "styles": ["a", "b"],
    "classifier": {"kind": "cnn on log-mel", "held_out_accuracy": 0.9},
    "generated": {**scores, "nn_distance": float("nan")},
    "real_held_out": scores,
    "noise": scores,
    "attributes": {
      "pitch": {
        "asked": [1.0],
        "styles": ["a"],
        "median": [[None]],
        "measured_share": 0.0,
        "spearman": np.float64("nan"),
      }
    },
  }


def test_report_figures_not_computed_are_written_as_null(tmp_path):
  write_report(str(tmp_path / "ev"), _tiny_report())
  on_disk = json.loads((tmp_path / "ev" / "report.json").read_text())  # strict JSON: no NaN
  assert on_disk["generated"]["kid"] is None and on_disk["attributes"]["pitch"]["spearman"] is None
  md = (tmp_path / "ev" / "report.md").read_text()
  assert "| KID | lower | - | - | - |" in md and "(not computed)" in md
  assert sorted(os.listdir(tmp_path / "ev")) == ["report.json", "report.md"]
  assert os.stat(tmp_path / "ev" / "report.json").st_mode & 0o777 == FILE_MODE


@pytest.mark.parametrize("full_at", ["report.md", "report.json"])
def test_a_full_disk_leaves_no_partial_report(tmp_path, monkeypatch, full_at):
  out = tmp_path / "ev"
  real_open = open

  class HalfWriter:
    """Writes half of what it is given, then the disk is full."""

    def __init__(self, f):
      self._f = f

    def write(self, data):
      self._f.write(data[: len(data) // 2])
      self._f.flush()
      raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

  def fake_open(path, mode="r", *args, **kwargs):
    f = real_open(path, mode, *args, **kwargs)
    return HalfWriter(f) if os.path.basename(path) == full_at + PART_SUFFIX else f

  monkeypatch.setattr(files, "open", fake_open, raising=False)
  with pytest.raises(DiskFullError, match="no space left on .* writing .*" + full_at):
    write_report(str(out), _tiny_report())
  left = sorted(os.listdir(out))
  assert not any(name.endswith(PART_SUFFIX) for name in left)
  assert "report.json" not in left  # never a partial one; report.md only when it was whole
  if "report.md" in left:
    assert (out / "report.md").read_text() == markdown(evaluation.json_safe(_tiny_report()))


def test_previews_are_whole_files_with_ordinary_permissions(tmp_path):
  import soundfile as sf

  audio = np.random.default_rng(0).uniform(-1, 1, (2, 1024, 1)).astype(np.float32)
  paths = previews.write_wavs(audio, ["a_0", "a_1"], str(tmp_path / "p"), 16000)
  grid = previews.spectrogram_grid(audio, ["a"], str(tmp_path / "p" / "grid.png"), 16000)
  assert sorted(os.listdir(tmp_path / "p")) == ["a_0.wav", "a_1.wav", "grid.png"]
  for path in paths + [grid]:
    assert os.stat(path).st_mode & 0o777 == FILE_MODE
  clip, rate = sf.read(paths[1], dtype="float32")
  assert rate == 16000 and clip.shape == (1024,)
  np.testing.assert_allclose(clip, audio[1, :, 0], atol=1 / 32768)
  assert open(grid, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
