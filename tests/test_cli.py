"""The `wavegan` CLI end to end on the tiny preset: train, generate, resume, stop, and errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from wavegan.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
  return main([str(a) for a in args])


def metrics_steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


def test_train_generate_resume_on_builtin_corpus(tmp_path, capsys):
  run = tmp_path / "run"
  assert run_cli("train", "--workdir", run, "--preset", "tiny", "--steps", 2, "--no-progress") == 0
  assert sorted(os.listdir(run / "checkpoints")) == ["2"]
  assert metrics_steps(run) == [1, 2]
  grid = run / "previews" / "step_0000002" / "grid.png"
  assert grid.exists() and grid.stat().st_size > 1000
  assert len(list((run / "previews" / "step_0000002").glob("*.wav"))) == 6  # one per style

  assert (
    run_cli(
      "generate",
      "--workdir",
      run,
      "--n",
      2,
      "--style",
      "snare",
      "--seed",
      3,
      "--out",
      tmp_path / "a",
    )
    == 0
  )
  files = sorted(f for f in os.listdir(tmp_path / "a") if f.endswith(".wav"))
  assert files == ["snare_s3_0000.wav", "snare_s3_0001.wav"]
  audio, sr = sf.read(tmp_path / "a" / files[0], dtype="float32")
  assert sr == 16000 and audio.shape == (16384,)
  assert np.max(np.abs(audio)) <= 1.0 and np.std(audio) > 0

  # The same seed and style give the same audio; another seed does not.
  assert (
    run_cli(
      "generate",
      "--workdir",
      run,
      "--n",
      2,
      "--style",
      "snare",
      "--seed",
      3,
      "--out",
      tmp_path / "b",
    )
    == 0
  )
  assert (
    run_cli(
      "generate",
      "--workdir",
      run,
      "--n",
      2,
      "--style",
      "snare",
      "--seed",
      4,
      "--out",
      tmp_path / "c",
    )
    == 0
  )
  for name in files:
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  other = sf.read(tmp_path / "c" / "snare_s4_0000.wav", dtype="float32")[0]
  assert not np.array_equal(audio, other)

  # An exported model renders exactly what the run folder renders.
  assert run_cli("export", "--workdir", run, "--out", tmp_path / "m.wgan") == 0
  assert run_cli("export", "--workdir", run, "--out", tmp_path / "m.wgan") == 2  # no overwrite
  jobs = tmp_path / "jobs.toml"
  jobs.write_text(
    '[[job]]\nname = "snares"\nstyle = "snare"\ncount = 3\nseed = 1\nformat = "wav"\n'
  )
  assert (
    run_cli(
      "render", jobs, "--model", tmp_path / "m.wgan", "--out", tmp_path / "r1", "--no-progress"
    )
    == 0
  )
  assert run_cli("render", jobs, "--workdir", run, "--out", tmp_path / "r2", "--no-progress") == 0
  for i in range(3):
    name = f"snares_{i:04d}.wav"
    assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()

  # An existing run resumes at its saved step and continues.
  capsys.readouterr()
  assert run_cli("train", "--workdir", run, "--steps", 4, "--no-progress") == 0
  err = capsys.readouterr().err
  assert f"resuming {run} at step 2" in err
  assert sorted(os.listdir(run / "checkpoints"), key=int)[-1] == "4"
  assert metrics_steps(run) == [1, 2, 3, 4]


def test_one_style_folder_trains_unconditionally(tmp_path):
  corpus = tmp_path / "corpus"
  assert run_cli("make-corpus", corpus, "--per-class", 3, "--sample-rate", 16000) == 0
  assert sorted(os.listdir(corpus)) == ["clap", "hat", "kick", "pluck", "snare", "tom"]
  only = tmp_path / "only"
  shutil.copytree(corpus / "kick", only / "kick")
  run = tmp_path / "run"
  assert (
    run_cli(
      "train", "--workdir", run, "--data", only, "--preset", "tiny", "--steps", 1, "--no-progress"
    )
    == 0
  )
  cfg = json.loads((run / "config.json").read_text())
  assert cfg["model"]["num_styles"] == 0
  assert run_cli("generate", "--workdir", run, "--n", 2, "--out", tmp_path / "out") == 0
  assert sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".wav")) == [
    "kick_s0_0000.wav",
    "kick_s0_0001.wav",
  ]


@pytest.mark.parametrize(
  "case", ["unknown_style", "missing_workdir", "empty_data", "bad_set", "overwrite"]
)
def test_user_errors_are_one_line(tmp_path, case):
  run = tmp_path / "run"
  if case in ("unknown_style", "overwrite"):
    assert (
      run_cli("train", "--workdir", run, "--preset", "tiny", "--steps", 1, "--no-progress") == 0
    )
  argv = {
    "unknown_style": [
      "generate",
      "--workdir",
      run,
      "--n",
      1,
      "--style",
      "cowbell",
      "--out",
      tmp_path / "o",
    ],
    "missing_workdir": [
      "generate",
      "--workdir",
      tmp_path / "nope",
      "--n",
      1,
      "--out",
      tmp_path / "o",
    ],
    "empty_data": ["train", "--workdir", run, "--data", tmp_path, "--preset", "tiny"],
    "bad_set": ["train", "--workdir", run, "--preset", "tiny", "--set", "model.width=3"],
    "overwrite": [
      "generate",
      "--workdir",
      run,
      "--n",
      1,
      "--style",
      "kick",
      "--out",
      tmp_path / "o",
    ],
  }[case]
  if case == "overwrite":
    assert run_cli(*argv) == 0
  res = subprocess.run(
    [sys.executable, "-m", "wavegan.cli", *map(str, argv)],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    timeout=120,
  )
  assert res.returncode == 2, res.stderr
  lines = [l for l in res.stderr.splitlines() if l.startswith("wavegan: error:")]
  assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
  expected = {
    "unknown_style": ["'cowbell'", "valid: clap, hat, kick, pluck, snare, tom"],
    "missing_workdir": ["nope", "no such run folder"],
    "empty_data": [str(tmp_path), "no audio files found"],
    "bad_set": ["model.width", "valid:"],
    "overwrite": ["kick_s0_0000.wav exists", "--overwrite"],
  }[case]
  for text in expected:
    assert text in lines[0], lines[0]


def test_ctrl_c_saves_and_kill_9_resumes(tmp_path):
  """SIGINT saves the current step and exits 130 with one line; SIGKILL loses only steps since
  the last save."""
  run = tmp_path / "run"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  cmd = [
    sys.executable,
    "-m",
    "wavegan.cli",
    "train",
    "--workdir",
    str(run),
    "--preset",
    "tiny",
    "--steps",
    "100000",
    "--set",
    "train.checkpoint_every=1000",
    "--set",
    "train.preview_every=1000",
    "--no-progress",
  ]

  def start_and_wait_for(step):
    proc = subprocess.Popen(
      cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:
      if (run / "metrics.jsonl").exists() and metrics_steps(run) and metrics_steps(run)[-1] >= step:
        return proc
      assert proc.poll() is None, proc.communicate()
      time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not start in time")

  proc = start_and_wait_for(3)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert err.splitlines()[-1].startswith("wavegan: interrupted: training stopped at step"), err
  assert "Traceback" not in err
  saved = sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())
  assert len(saved) == 1 and saved[0] >= 3, saved
  assert f"saving step {saved[0]}" in err

  proc = start_and_wait_for(saved[0] + 2)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=30)
  # Nothing was saved after the first checkpoint, so a resume starts exactly there.
  res = subprocess.run(
    cmd[:-1] + ["--steps", str(saved[0] + 1), "--no-progress"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert res.returncode == 0, res.stderr
  assert f"resuming {run} at step {saved[0]}" in res.stderr
  # Metrics of the lost steps were dropped and logged again: each step appears once.
  assert metrics_steps(run) == list(range(1, saved[0] + 2))


def test_prepare_then_train_from_cache_and_resume_equals_one_run(tmp_path, capsys):
  """A raw folder and its prepared cache train identically; a resumed run sees the same batches."""
  corpus = tmp_path / "corpus"
  assert run_cli("make-corpus", corpus, "--per-class", 3) == 0
  (corpus / "kick" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
  capsys.readouterr()
  assert run_cli("prepare", corpus, "--out", tmp_path / "cache", "--no-progress") == 0
  out = capsys.readouterr().out
  assert "18 files used (18 clips), 1 skipped: 1 truncated" in out
  report = json.loads((tmp_path / "cache" / "prepare_report.json").read_text())
  assert [os.path.basename(s["path"]) for s in report["skipped"]] == ["broken.wav"]

  common = ["--preset", "tiny", "--no-progress", "--set", "train.checkpoint_every=2"]
  # One uninterrupted run from the raw folder (prepared on first use) ...
  assert (
    run_cli("train", "--workdir", tmp_path / "one", "--data", corpus, "--steps", 4, *common) == 0
  )
  # ... and one from the cache, stopped at step 2 and resumed.
  assert (
    run_cli(
      "train", "--workdir", tmp_path / "two", "--data", tmp_path / "cache", "--steps", 2, *common
    )
    == 0
  )
  capsys.readouterr()
  assert (
    run_cli(
      "train",
      "--workdir",
      tmp_path / "two",
      "--data",
      tmp_path / "cache",
      "--steps",
      4,
      "--no-progress",
    )
    == 0
  )
  assert "data loader state restored from the checkpoint" in capsys.readouterr().err
  for run in ("one", "two"):
    assert (
      run_cli(
        "generate",
        "--workdir",
        tmp_path / run,
        "--n",
        3,
        "--seed",
        5,
        "--out",
        tmp_path / f"{run}_clips",
      )
      == 0
    )
  names = sorted(f for f in os.listdir(tmp_path / "one_clips") if f.endswith(".wav"))
  assert len(names) == 3
  for name in names:
    assert (tmp_path / "one_clips" / name).read_bytes() == (
      tmp_path / "two_clips" / name
    ).read_bytes()
  losses = [
    [json.loads(l)["d/loss"] for l in open(tmp_path / run / "metrics.jsonl")]
    for run in ("one", "two")
  ]
  assert losses[0] == losses[1]
