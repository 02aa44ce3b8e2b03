"""Render under hard faults: a full disk, a write that silently comes up short, Ctrl-C.

Whatever happens, no file under a final name is corrupt, no temporary is left, the manifest lists
exactly the files that exist, and a re-run produces exactly what an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from wavegan import Synthesizer, files
from wavegan.config import ConfigError
from wavegan.errors import DiskFullError, ResourceError, UserError
from wavegan.presets import preset
from wavegan.training import step as ts

rd = importlib.import_module(
  "wavegan.synthesis.render"
)  # the module (the package exports its function)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = """
[[job]]
name = "a"
count = 10
seed = 3
format = "flac"
subtype = 24

[[job]]
name = "b"
style = "kick"
count = 6
format = "wav"
"""


@pytest.fixture(scope="module")
def synth():
  cfg = preset("tiny")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_styles=3))
  _, state = ts.build(cfg, seed=1)
  return Synthesizer(cfg.model, ("clap", "kick", "snare"), 16000, state.ema_params, batch_size=4)


def _jobs(tmp_path, text=JOBS):
  path = tmp_path / "jobs.toml"
  path.write_text(text)
  return rd.read_jobs(str(path))


def _tree(folder) -> dict[str, bytes]:
  return {
    os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
    for d, _, fs in os.walk(folder)
    for f in fs
  }


def _assert_consistent(out) -> None:
  """No temporaries; every audio file decodes whole; the manifest lists exactly those files."""
  tree = _tree(out)
  assert not [f for f in tree if f.endswith(files.PART_SUFFIX)], sorted(tree)
  audio = sorted(f for f in tree if f.endswith((".wav", ".flac")))
  for f in audio:
    assert sf.read(os.path.join(out, f))[0].shape[0] == 16384, f
  if "manifest.json" in tree:
    assert sorted(r["file"] for r in json.loads(tree["manifest.json"])) == audio


@pytest.fixture(scope="module")
def clean(synth, tmp_path_factory):
  """What an uninterrupted render writes."""
  tmp = tmp_path_factory.mktemp("clean")
  rd.render(synth, _jobs(tmp), str(tmp / "out"))
  return _tree(tmp / "out")


def test_full_disk_mid_render_then_rerun_gives_the_clean_files(synth, clean, tmp_path, monkeypatch):
  real_write, calls = sf.write, []

  def write(path, data, *args, **kwargs):
    calls.append(path)
    if len(calls) == 7:  # half a file reaches the disk, then the disk is full
      with open(path, "wb") as f:
        f.write(b"fLaC" + b"\0" * 100)
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_write(path, data, *args, **kwargs)

  monkeypatch.setattr(rd.sf, "write", write)
  out = tmp_path / "out"
  with pytest.raises(DiskFullError) as info:
    rd.render(synth, _jobs(tmp_path), str(out))
  msg = str(info.value)
  assert "no space left on /" in msg and "free" in msg and "\n" not in msg
  _assert_consistent(out)
  assert 0 < len([f for f in os.listdir(out) if f.endswith((".wav", ".flac"))]) < 16
  monkeypatch.setattr(rd.sf, "write", real_write)  # space freed
  rd.render(synth, _jobs(tmp_path), str(out))
  assert _tree(out) == clean


def test_a_write_that_comes_up_short_is_never_renamed(synth, tmp_path, monkeypatch):
  """libsndfile can lose data without an error (e.g. a full disk at close): the re-read catches it."""
  real_write = sf.write

  def short_write(path, data, *args, **kwargs):
    real_write(path, data, *args, **kwargs)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  monkeypatch.setattr(rd.sf, "write", short_write)
  with pytest.raises(UserError, match="expected 16384|does not decode"):
    rd.write_clip(
      str(tmp_path / "x.wav"), np.zeros((16384, 1), np.float32), rd.RenderJob("j"), 16000
    )
  assert os.listdir(tmp_path) == []


def test_the_free_space_is_checked_before_any_work(synth, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(files, "free_bytes", lambda path: 100_000)
  out = tmp_path / "out"
  with pytest.raises(
    ResourceError, match=r"rendering 16 clips needs about 762.9 kB on /, which has 100.0 kB free"
  ):
    rd.render(synth, _jobs(tmp_path), str(out))
  assert not out.exists()


def test_ctrl_c_stops_within_a_batch_and_keeps_a_true_manifest(synth, clean, tmp_path, monkeypatch):
  real_batches, seen = Synthesizer.batches, []

  def batches(self, z, style=None):
    for item in real_batches(self, z, style):
      seen.append(1)
      if len(seen) == 3:
        raise KeyboardInterrupt
      yield item

  monkeypatch.setattr(Synthesizer, "batches", batches)
  out = tmp_path / "out"
  with pytest.raises(KeyboardInterrupt, match="rendering stopped; 8 clips are in"):
    rd.render(synth, _jobs(tmp_path), str(out))
  _assert_consistent(out)
  assert len(json.loads((out / "manifest.json").read_text())) == 8
  monkeypatch.setattr(Synthesizer, "batches", real_batches)
  rd.render(synth, _jobs(tmp_path), str(out))
  assert _tree(out) == clean


def sigint_as_usual() -> None:
  """In the child: Ctrl-C's default handling, even when this suite runs as a background job
  (whose shell started it with SIGINT ignored, which a child would inherit)."""
  import signal

  signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_the_cli_exits_130_with_one_line(synth, tmp_path):
  model = str(tmp_path / "m.wgan")
  synth.export(model)
  (tmp_path / "jobs.toml").write_text('[[job]]\nname = "many"\ncount = 100000\n')
  out = tmp_path / "out"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "wavegan.cli",
      "render",
      str(tmp_path / "jobs.toml"),
      "--model",
      model,
      "--out",
      str(out),
      "--no-progress",
      "--batch-size",
      "16",
    ],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=sigint_as_usual,
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (out.exists() and len(os.listdir(out)) > 20):
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  t0 = time.time()
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert time.time() - t0 < 20
  assert err.count("\n") == 1 and err.startswith("wavegan: interrupted: rendering stopped;"), err
  _assert_consistent(out)


def _mount_tmpfs(path, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    return (
      subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        timeout=10,
      ).returncode
      == 0
    )
  except (OSError, subprocess.TimeoutExpired):
    return False


def test_a_real_full_disk(synth, clean, tmp_path, monkeypatch):
  """On a 1 MB tmpfs holding 700 kB: the estimate refuses the render; forced past it, the disk
  fills, the error names it, nothing corrupt stays; after freeing space a re-run completes it."""
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "1m"):
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    out = disk / "out"
    (disk / "ballast").write_bytes(b"\0" * 700_000)
    with pytest.raises(ResourceError, match="free"):
      rd.render(synth, _jobs(tmp_path), str(out))
    assert not out.exists()
    monkeypatch.setattr(files, "check_free_space", lambda *a, **k: None)  # force past the estimate
    with pytest.raises(DiskFullError, match=f"no space left on {disk}"):
      rd.render(synth, _jobs(tmp_path), str(out))
    _assert_consistent(out)
    os.remove(disk / "ballast")
    monkeypatch.undo()
    rd.render(synth, _jobs(tmp_path), str(out))
    assert _tree(out) == clean
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


@pytest.mark.parametrize(
  "edit",
  [
    ("seed = 3", "seed = 4"),
    ('style = "kick"', 'style = "snare"'),
    ("subtype = 24", "subtype = 16"),
  ],
  ids=["latents", "style", "subtype"],
)
def test_an_edited_job_cannot_resume_over_files_it_did_not_make(synth, clean, tmp_path, edit):
  """Files skipped because they exist must still be what the manifest says: an edited job is
  refused (naming what changed) unless --overwrite, and the folder is left as it was."""
  out = tmp_path / "out"
  rd.render(synth, _jobs(tmp_path), str(out))
  before = _tree(out)
  with pytest.raises(rd.JobError, match="exists but|other latents"):
    rd.render(synth, _jobs(tmp_path, JOBS.replace(*edit)), str(out))
  assert _tree(out) == before
  rd.render(synth, _jobs(tmp_path, JOBS.replace(*edit)), str(out), overwrite=True)
  _assert_consistent(out)
  assert _tree(out) != before


def test_rerender_at_another_batch_size_is_refused(synth, tmp_path):
  """XLA's CPU kernels sum in a shape-dependent order, so bit-exactness holds at one batch size:
  the manifest records it, and rerender refuses a model loaded at another."""
  out = tmp_path / "out"
  rd.render(synth, _jobs(tmp_path), str(out))
  row = json.loads((out / "manifest.json").read_text())[0]
  assert row["batch_size"] == synth.batch_size == 4
  other = Synthesizer(synth.model, synth.styles, synth.sample_rate, synth.params, batch_size=8)
  with pytest.raises(
    ConfigError, match="rendered at batch size 4; load the model with batch_size=4"
  ):
    rd.rerender(other, row, str(out), path=str(tmp_path / "again.flac"))
  assert rd.rerender(synth, row, str(out), path=str(tmp_path / "again.flac"))


def test_a_clip_cut_short_is_a_full_disk_when_the_disk_is_full_and_an_error_when_not(
  tmp_path, monkeypatch
):
  """A file cut short (a FLAC whose header may claim any length, a WAV) is never read whole: the
  check names a full disk, or the short file when there is space."""
  x = np.zeros((4000, 1), np.float32)
  cut = []
  for name, fmt in (("a.flac", "FLAC"), ("b.wav", "WAV")):
    path = str(tmp_path / name)
    sf.write(path, x, 16000, format=fmt, subtype="PCM_16")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    cut.append(path)
  whole = str(tmp_path / "c.wav")
  sf.write(whole, x, 16000, format="WAV", subtype="PCM_16")
  verify = rd._verify_audio(str(tmp_path / "final.wav"), 4000, 1, need=8000)
  monkeypatch.setattr(files, "free_bytes", lambda path: 0)
  for path in cut:
    with pytest.raises(DiskFullError, match="no space left"):
      verify(path)
  verify(whole)
  monkeypatch.setattr(files, "free_bytes", lambda path: 10**9)
  for path in cut:
    with pytest.raises(UserError, match="the written file (does not decode|holds)"):
      verify(path)
