"""Render jobs: validation, output, manifest, exact re-render, resume (wavegan/render.py)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from wavegan import Synthesizer
from wavegan.presets import preset
from wavegan.synthesis.render import JobError, read_jobs, render, rerender
from wavegan.training import step as ts

STYLES = ("clap", "kick", "snare")


@pytest.fixture(scope="module")
def synth():
  cfg = preset("tiny")
  cfg = cfg.__class__(
    **{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "num_styles": 3})}
  )
  _, state = ts.build(cfg, seed=1)
  return Synthesizer(cfg.model, STYLES, 16000, state.ema_params, batch_size=4)


def _jobs(tmp_path, text: str, name: str = "jobs.toml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _audio_files(folder):
  return sorted(
    os.path.relpath(os.path.join(d, f), folder)
    for d, _, fs in os.walk(folder)
    for f in fs
    if f.endswith((".wav", ".flac", ".ogg"))
  )


MINIMAL = """
[[job]]
name = "snares"
style = "snare"
count = 8
seed = 1
format = "wav"
"""


def test_minimal_job_file_renders_as_written(synth, tmp_path):
  out = tmp_path / "out"
  report = render(synth, read_jobs(_jobs(tmp_path, MINIMAL)), str(out))
  assert (report.written, report.skipped) == (8, 0)
  assert _audio_files(out) == [f"snares_{i:04d}.wav" for i in range(8)]
  info = sf.info(str(out / "snares_0000.wav"))
  assert (info.samplerate, info.frames, info.subtype) == (16000, 16384, "PCM_16")
  # The files hold exactly the generator's clips of seed 1 (16-bit quantised).
  expected = synth.generate(8, style="snare", seed=1)
  for i in range(8):
    got = sf.read(str(out / f"snares_{i:04d}.wav"), dtype="float32", always_2d=True)[0]
    np.testing.assert_allclose(got, expected[i], atol=1 / 32768 + 1e-6)
  rows = json.loads((out / "manifest.json").read_text())
  assert [r["file"] for r in rows] == [f"snares_{i:04d}.wav" for i in range(8)]
  assert {(r["job"], r["style"], r["seed"]) for r in rows} == {("snares", "snare", 1)}
  assert [r["latent_index"] for r in rows] == list(range(8))
  np.testing.assert_array_equal(np.load(out / rows[0]["latents"]), synth.latents(8, seed=1))
  with open(out / "manifest.csv") as f:
    assert [r["file"] for r in csv.DictReader(f)] == [r["file"] for r in rows]


FULL = """
[[job]]
name = "walk"
style = {kick = 0.7, snare = 0.3}
count = 5
latent = "interpolate"
seeds = [1, 2, 3]
interpolation = "slerp"
format = "flac"
subtype = 24
sample_rate = 22050
normalize = "peak"
peak_db = -3.0
fade_out_ms = 50
filename = "{job}/{style}_{index:02d}"

[[job]]
name = "loud"
count = 3
seed = 7
format = "ogg"
normalize = "loudness"
loudness_lufs = -18.0

[[job]]
name = "float"
style = "clap"
count = 2
format = "wav"
subtype = "float"
"""


def test_every_option_and_exact_rerender_from_the_manifest(synth, tmp_path):
  out = tmp_path / "out"
  render(synth, read_jobs(_jobs(tmp_path, FULL)), str(out))
  walk = [f"walk/kick0.7-snare0.3_{i:02d}.flac" for i in range(5)]
  assert _audio_files(out) == sorted(
    walk + [f"loud_{i:04d}.ogg" for i in range(3)] + ["float_0000.wav", "float_0001.wav"]
  )
  x, sr = sf.read(str(out / walk[2]), always_2d=True)
  info = sf.info(str(out / walk[2]))
  assert (sr, info.subtype, info.format) == (22050, "PCM_24", "FLAC")
  assert x.shape[0] == round(16384 * 22050 / 16000)
  assert abs(np.max(np.abs(x)) - 10 ** (-3 / 20)) < 1e-3  # peak -3 dBFS
  assert np.max(np.abs(x[-5:])) < 1e-3 < np.max(np.abs(x[-2000:-1200]))  # faded out
  assert sf.info(str(out / "loud_0000.ogg")).subtype == "VORBIS"
  # The interpolation passes through latent 0 of each seed, in order.
  z = np.load(out / "latents" / "walk.npy")
  np.testing.assert_allclose(
    z[[0, 2, 4]], np.stack([synth.latents(1, s)[0] for s in (1, 2, 3)]), atol=1e-6
  )
  # Any clip comes back bit for bit from its manifest row (CSV strings included). Exact, not
  # approximate: at one batch size a clip's audio does not depend on its row, on the other rows
  # or on the padding, and repeats bit for bit with both cores kept busy by other processes
  # (measured). It is the same Synthesizer here; at another batch size or core count XLA's
  # kernels sum in another order and the last bits move.
  with open(out / "manifest.csv") as f:
    rows = {r["file"]: r for r in csv.DictReader(f)}
  for name in (walk[3], "loud_0001.ogg", "float_0001.wav"):
    again = rerender(
      synth, rows[name], str(out), path=str(tmp_path / ("again_" + os.path.basename(name)))
    )
    a = sf.read(again, dtype="float32")[0]
    b = sf.read(str(out / name), dtype="float32")[0]
    np.testing.assert_array_equal(a, b)


def test_resume_after_a_partial_render_writes_only_what_is_missing(synth, tmp_path):
  jobs = read_jobs(_jobs(tmp_path, MINIMAL + FULL.split("[[job]]\nname = \"loud\"")[0]))
  out = tmp_path / "out"
  render(synth, jobs, str(out))
  before = {f: (out / f).read_bytes() for f in _audio_files(out)}
  # A killed render: some files never written, one left half-written under its temporary name.
  for f in ("snares_0002.wav", "snares_0007.wav", "walk/kick0.7-snare0.3_01.flac"):
    os.remove(out / f)
  (out / "snares_0002.wav.part").write_bytes(b"RIFF half a file")
  report = render(synth, jobs, str(out))
  assert (report.written, report.skipped) == (3, len(before) - 3)
  assert {f: (out / f).read_bytes() for f in _audio_files(out)} == before
  rows = json.loads((out / "manifest.json").read_text())
  assert len(rows) == len({r["file"] for r in rows}) == len(before)
  assert render(synth, jobs, str(out), overwrite=True).written == len(before)


@pytest.mark.parametrize(
  "edit", [("seed = 1", "seed = 2"), ('style = "snare"', 'style = "kick"')], ids=["seed", "style"]
)
def test_an_edited_job_resumed_after_a_partial_render_is_refused(synth, tmp_path, edit):
  """The files a resume would skip must be what the manifest and latents say: after an edit,
  resuming without --overwrite is refused and rewrites neither the manifest nor the latents."""
  out = tmp_path / "out"
  render(synth, read_jobs(_jobs(tmp_path, MINIMAL)), str(out))
  for f in ("snares_0002.wav", "snares_0007.wav"):
    os.remove(out / f)
  before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
  edited = read_jobs(_jobs(tmp_path, MINIMAL.replace(*edit), "edited.toml"))
  with pytest.raises(JobError, match="'snares'.*(other latents|exists but)"):
    render(synth, edited, str(out))
  assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
  assert render(synth, edited, str(out), overwrite=True).written == 8


def test_latents_from_a_file(synth, tmp_path):
  z = np.random.default_rng(0).uniform(-1, 1, (6, synth.model.latent_dim)).astype(np.float32)
  np.save(tmp_path / "z.npy", z)
  jobs = read_jobs(
    _jobs(
      tmp_path,
      '[[job]]\nname = "mine"\nstyle = "kick"\nlatent = "file"\n'
      'latent_file = "z.npy"\ncount = 4\nformat = "wav"\nsubtype = "float"\n',
    )
  )
  out = tmp_path / "out"
  render(synth, jobs, str(out))
  expected = synth.from_latents(z[:4], "kick")
  for i in range(4):
    np.testing.assert_array_equal(
      sf.read(str(out / f"mine_{i:04d}.wav"), dtype="float32", always_2d=True)[0], expected[i]
    )


@pytest.mark.parametrize(
  "text, message",
  [
    ('[[job]]\nname = "a"\ncount = 2\ncout = 3\n', "job 'a' (#1): key 'cout': unknown key; valid:"),
    ('[[job]]\nname = "a"\ncount = 0\n', "job 'a' (#1): key 'count': must be >= 1"),
    (
      '[[job]]\nname = "a"\ncount = "8"\n',
      "job 'a' (#1): key 'count': must be an integer, got '8'",
    ),
    ('[[job]]\ncount = 2\n', "job #1: key 'name': every job needs a name"),
    (
      '[[job]]\nname = "a"\ncount = 2\nformat = "mp3"\n',
      "job 'a' (#1): key 'format': must be one of",
    ),
    (
      '[[job]]\nname = "a"\ncount = 2\nformat = "flac"\nsubtype = "float"\n',
      "key 'subtype': flac takes 16, 24",
    ),
    (
      '[[job]]\nname = "a"\ncount = 2\nfilename = "{job}_{idx}"\n',
      "key 'filename': unknown field {idx}",
    ),
    (
      '[[job]]\nname = "a"\ncount = 2\nlatent = "interpolate"\nseeds = [1]\n',
      "key 'seeds': an interpolation needs at least 2",
    ),
    (
      '[[job]]\nname = "a"\ncount = 2\nlatent = "file"\nlatent_file = "nope.npy"\n',
      "key 'latent_file':",
    ),
    ('[[job]]\nname = "a"\ncount = 2\n[[job]]\nname = "a"\ncount = 1\n', "two jobs are named 'a'"),
    (
      '[[job]]\nname = "a"\ncount = 2\n[[job]]\nname = "b"\ncount = 2\nnormalize = "rms"\n',
      "job 'b' (#2): key 'normalize'",
    ),
    ('jobs = 3\n', "unknown top-level key 'jobs'"),
    ('[[job]\nname = "a"\n', "not valid TOML"),
  ],
)
def test_job_file_errors_name_the_job_and_key(tmp_path, text, message):
  with pytest.raises(JobError) as err:
    read_jobs(_jobs(tmp_path, text))
  assert message in str(err.value)


def test_model_dependent_errors_stop_before_any_audio(synth, tmp_path):
  text = MINIMAL + '[[job]]\nname = "bad"\nstyle = "cowbell"\ncount = 2\n'
  out = tmp_path / "out"
  with pytest.raises(JobError, match="job 'bad' \\(#2\\): key 'style': unknown style 'cowbell'"):
    render(synth, read_jobs(_jobs(tmp_path, text)), str(out))
  assert not out.exists() or not _audio_files(out)
  clash = MINIMAL + '[[job]]\nname = "more"\ncount = 2\nfilename = "snares_{index:04d}"\n'
  with pytest.raises(JobError, match="snares_0000.wav is also a file of job 'snares'"):
    render(synth, read_jobs(_jobs(tmp_path, clash, "clash.toml")), str(out))
