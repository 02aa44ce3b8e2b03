"""Hostile and extreme input: one line and exit code 2 from the CLI, typed errors from the API,
numbers that would make garbage refused, requests sized before work starts."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from wavegan import Synthesizer, UserError
from wavegan.cli import main
from wavegan.config import ConfigError
from wavegan.errors import NonFiniteError, ResourceError, one_line
from wavegan.presets import preset
from wavegan.synthesis.render import parse_style
from wavegan.training import step as ts

STYLES = ("clap", "kick", "snare")


@pytest.fixture(scope="module")
def synth():
  cfg = preset("tiny")
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_styles=3))
  _, state = ts.build(cfg, seed=1)
  return Synthesizer(cfg.model, STYLES, 16000, state.ema_params, batch_size=4)


@pytest.fixture(scope="module")
def model_file(synth, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("model") / "tiny.wgan")
  synth.export(path)
  return path


def _job(tmp_path, body: str) -> str:
  path = tmp_path / "jobs.toml"
  count = "" if body.startswith("count") else "count = 2\n"
  path.write_text('[[job]]\nname = "j"\n' + count + body + "\n")
  return str(path)


def _latents(tmp_path, values) -> str:
  path = tmp_path / "z.npy"
  np.save(path, values)
  return str(path)


def sigint_as_usual() -> None:
  """In the child: Ctrl-C's default handling, even when this suite runs as a background job
  (whose shell started it with SIGINT ignored, which a child would inherit)."""
  import signal

  signal.signal(signal.SIGINT, signal.SIG_DFL)


# Each case: (id, a function of (tmp_path, model_file) giving the argv, a word the message must hold).
CLI_CASES = [
  (
    "seed_2_pow_70",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--seed", str(2**70), "--out", t / "o"],
    "out of range",
  ),
  (
    "negative_seed",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--seed", "-1", "--out", t / "o"],
    "out of range",
  ),
  (
    "zero_count",
    lambda t, m: ["generate", "--workdir", m, "--n", "0", "--out", t / "o"],
    "out of range",
  ),
  (
    "count_not_a_number",
    lambda t, m: ["generate", "--workdir", m, "--n", "many", "--out", t / "o"],
    "not an integer",
  ),
  (
    "empty_style_value",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--style", "kick=", "--out", t / "o"],
    "name=value",
  ),
  (
    "empty_style_name",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--style", "=0.5", "--out", t / "o"],
    "name=value",
  ),
  (
    "unknown_style",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--style", "cowbell", "--out", t / "o"],
    "unknown style",
  ),
  (
    "style_weight_nan",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--style", "kick=nan", "--out", t / "o"],
    "finite",
  ),
  (
    "style_weight_huge",
    lambda t, m: [
      "generate",
      "--workdir",
      m,
      "--n",
      "2",
      "--style",
      "kick=1e308",
      "--out",
      t / "o",
    ],
    "within",
  ),
  (
    "style_bad_json",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--style", "{kick", "--out", t / "o"],
    "JSON",
  ),
  (
    "generate_out_is_a_file",
    lambda t, m: ["generate", "--workdir", m, "--n", "2", "--out", m],
    "is a file",
  ),
  (
    "generate_too_big_for_the_disk",
    lambda t, m: ["generate", "--workdir", m, "--n", str(10**9), "--out", t / "o"],
    "free",
  ),
  ("export_out_is_a_folder", lambda t, m: ["export", "--workdir", t, "--out", t], "is a folder"),
  (
    "model_file_not_a_model",
    lambda t, m: ["generate", "--workdir", __file__, "--n", "1", "--out", t / "o"],
    "",
  ),
  (
    "render_out_is_a_file",
    lambda t, m: ["render", _job(t, ""), "--model", m, "--out", m],
    "is a file",
  ),
  (
    "render_batch_size_zero",
    lambda t, m: ["render", _job(t, ""), "--model", m, "--batch-size", "0"],
    "out of range",
  ),
  (
    "template_nul",
    lambda t, m: ["render", _job(t, 'filename = "a\\u0000b"'), "--model", m],
    "unprintable",
  ),
  (
    "template_escape_char",
    lambda t, m: ["render", _job(t, 'filename = "a\\u001bb"'), "--model", m],
    "unprintable",
  ),
  (
    "template_newline",
    lambda t, m: ["render", _job(t, 'filename = "a\\nb_{index}"'), "--model", m],
    "unprintable",
  ),
  (
    "template_empty_part",
    lambda t, m: ["render", _job(t, 'filename = "a//{index}"'), "--model", m],
    "no empty parts",
  ),
  ("job_seed_huge", lambda t, m: ["render", _job(t, "seed = 1099511627776"), "--model", m], "seed"),
  (
    "job_count_huge",
    lambda t, m: ["render", _job(t, "count = 1000000000000"), "--model", m, "--out", t / "o"],
    "free",
  ),
  (
    "job_style_nan",
    lambda t, m: ["render", _job(t, "style = {kick = nan}"), "--model", m],
    "finite",
  ),
  (
    "job_style_huge",
    lambda t, m: ["render", _job(t, "style = {kick = 1e300}"), "--model", m, "--out", t / "o"],
    "within",
  ),
  (
    "latents_nan",
    lambda t, m: [
      "render",
      _job(
        t, 'latent = "file"\nlatent_file = "%s"' % _latents(t, np.full((2, 16), np.nan, np.float32))
      ),
      "--model",
      m,
      "--out",
      t / "o",
    ],
    "finite",
  ),
  (
    "latents_absurd",
    lambda t, m: [
      "render",
      _job(
        t, 'latent = "file"\nlatent_file = "%s"' % _latents(t, np.full((2, 16), 1e30, np.float32))
      ),
      "--model",
      m,
      "--out",
      t / "o",
    ],
    "within",
  ),
  (
    "latents_pickled_objects",
    lambda t, m: [
      "render",
      _job(
        t, 'latent = "file"\nlatent_file = "%s"' % _latents(t, np.array([{"a": 1}], dtype=object))
      ),
      "--model",
      m,
      "--out",
      t / "o",
    ],
    "cannot read",
  ),
  ("job_file_not_toml", lambda t, m: ["render", __file__, "--model", m], "TOML"),
  (
    "train_data_is_a_file",
    lambda t, m: ["train", "--workdir", t / "run", "--data", m],
    "is a file",
  ),
  (
    "train_workdir_is_a_file",
    lambda t, m: ["train", "--workdir", m, "--preset", "tiny"],
    "is a file",
  ),
  (
    "train_lr_nan",
    lambda t, m: ["train", "--workdir", t / "run", "--set", "optim.g_lr=nan"],
    "finite",
  ),
  (
    "train_lr_inf",
    lambda t, m: ["train", "--workdir", t / "run", "--set", "optim.d_lr=inf"],
    "finite",
  ),
  (
    "train_lr_1e308",
    lambda t, m: ["train", "--workdir", t / "run", "--set", "optim.d_lr=1e308"],
    "out of range",
  ),
  (
    "train_lr_negative",
    lambda t, m: ["train", "--workdir", t / "run", "--set", "optim.g_lr=-1"],
    "(0, 1]",
  ),
  (
    "train_seed_huge",
    lambda t, m: ["train", "--workdir", t / "run", "--set", f"train.seed={2**70}"],
    "out of range",
  ),
  (
    "train_model_absurd",
    lambda t, m: ["train", "--workdir", t / "run", "--set", "model.dim=1000000000"],
    "out of range",
  ),
  (
    "train_steps_huge",
    lambda t, m: ["train", "--workdir", t / "run", "--steps", str(2**70)],
    "out of range",
  ),
  ("evaluate_data_is_a_file", lambda t, m: ["evaluate", "--workdir", t, "--data", m], "is a file"),
  ("evaluate_out_is_a_file", lambda t, m: ["evaluate", "--workdir", t, "--out", m], "is a file"),
  ("prepare_data_is_a_file", lambda t, m: ["prepare", m, "--out", t / "cache"], "is a file"),
  (
    "prepare_silence_db_nan",
    lambda t, m: ["prepare", t, "--out", t / "c", "--silence-db", "nan"],
    "out of range",
  ),
  (
    "make_corpus_rate_huge",
    lambda t, m: ["make-corpus", t / "c", "--sample-rate", str(10**12)],
    "out of range",
  ),
  ("plot_out_is_a_folder", lambda t, m: ["plot", "--workdir", t, "--out", t], "is a folder"),
  ("unknown_command", lambda t, m: ["bogus"], "invalid choice"),
  ("unknown_option", lambda t, m: ["plot", "--workdir", t, "--frobnicate"], "unrecognized"),
]


@pytest.mark.parametrize(
  "make_argv,word", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_user_mistakes_are_one_line_and_exit_2(make_argv, word, model_file, tmp_path, capsys):
  argv = [str(a) for a in make_argv(tmp_path, model_file)]
  before = sorted(os.listdir(tmp_path))
  code = main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.endswith("\n") and err.count("\n") == 1, err
  assert err.startswith("wavegan: error: ") and "Traceback" not in err
  assert word in err, err
  assert sorted(os.listdir(tmp_path)) == before, "a refused command left files behind"


def test_an_unexpected_fault_is_one_line_with_exit_1(monkeypatch, capsys, tmp_path):
  import wavegan.cli as cli

  def boom(args):
    raise ZeroDivisionError("division by zero")

  monkeypatch.setattr(cli, "cmd_plot", boom)  # build_parser binds the command when main runs
  monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
  assert main(["plot", "--workdir", str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err
  assert cli.TRACEBACK_ENV in err


def test_odd_characters_are_escaped_onto_one_line():
  assert one_line("a\nb\x00c\x1b[31md\udcff") == "a\\nb\\x00c\\x1b[31md\\udcff"
  assert one_line("kick é 鼓") == "kick é 鼓"


API_CASES = [
  ("negative_count", lambda s: s.generate(-1), ConfigError),
  ("fractional_count", lambda s: s.generate(2.5), ConfigError),
  ("count_beyond_memory", lambda s: s.generate(10**9), ResourceError),
  ("latents_beyond_memory", lambda s: s.latents(10**12), ResourceError),
  ("seed_2_pow_70", lambda s: s.latents(2, seed=2**70), ConfigError),
  ("seed_2_pow_32_would_wrap", lambda s: s.latents(2, seed=2**32), ConfigError),
  ("latents_nan", lambda s: s.from_latents(np.full((1, 16), np.nan)), NonFiniteError),
  ("latents_inf", lambda s: s.from_latents(np.full((1, 16), np.inf)), NonFiniteError),
  ("latents_absurd", lambda s: s.from_latents(np.full((1, 16), 1e308)), NonFiniteError),
  ("latents_wrong_shape", lambda s: s.from_latents(np.zeros((1, 7))), ConfigError),
  ("latents_strings", lambda s: s.from_latents(np.array([["a"] * 16])), ConfigError),
  (
    "interpolate_nan_end",
    lambda s: s.interpolate(np.zeros(16), np.full(16, np.nan), 3),
    NonFiniteError,
  ),
  ("style_weight_inf", lambda s: s.generate(1, style={"kick": float("inf")}), ConfigError),
  ("style_weight_1e308", lambda s: s.generate(1, style={"kick": 1e308}), NonFiniteError),
  ("style_weight_5", lambda s: s.generate(1, style={"kick": 5.0}), NonFiniteError),
  ("style_weight_text", lambda s: s.generate(1, style={"kick": "loud"}), ConfigError),
  ("style_array_nan", lambda s: s.generate(2, style=np.full((2, 3), np.nan)), NonFiniteError),
  ("style_ids_out_of_range", lambda s: s.generate(2, style=np.array([0, 9])), ConfigError),
  ("unknown_style", lambda s: s.generate(1, style="cowbell"), ConfigError),
  ("parse_style_empty_value", lambda s: parse_style("kick="), ConfigError),
  ("parse_style_repeated", lambda s: parse_style("kick=1,kick=2"), ConfigError),
]


@pytest.mark.parametrize("call,error", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_raises_typed_errors(synth, call, error):
  with pytest.raises(error) as info:
    call(synth)
  assert isinstance(info.value, UserError)
  assert "\n" not in str(info.value)


def test_the_bounds_still_allow_extrapolation(synth):
  """The sane ranges are not tight: 4x the prior and weights of +-4 render finite audio."""
  audio = synth.from_latents(np.full((1, 16), 3.9, np.float32), style={"kick": 4.0, "snare": -4.0})
  assert np.isfinite(audio).all()


def test_a_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(
  tmp_path, monkeypatch, capsys
):
  """Step 3 sees a NaN batch (its losses, gradients and parameters all go NaN): the run stops
  naming step 3, saves nothing of it, and resumes from the good step-2 checkpoint."""
  import jax.numpy as jnp

  real_make, calls = ts.make_train_step, []

  def make_poisoned(*args, **kwargs):
    step_fn = real_make(*args, **kwargs)

    def poisoned(state, real, labels):
      calls.append(1)
      return step_fn(state, real * jnp.nan if len(calls) == 3 else real, labels)

    return poisoned

  monkeypatch.setattr(ts, "make_train_step", make_poisoned)
  run = tmp_path / "run"
  argv = [
    "train",
    "--workdir",
    str(run),
    "--preset",
    "tiny",
    "--steps",
    "6",
    "--no-progress",
    "--set",
    "train.tensorboard=false",
  ]
  assert main(argv) == 2
  err = capsys.readouterr().err.splitlines()[-1]
  assert err.startswith("wavegan: error: step 3: a loss or gradient is not finite (d/adv=nan"), err
  assert "the last good checkpoint, step 2, is kept" in err
  assert sorted(os.listdir(run / "checkpoints")) == ["2"]
  with open(run / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2]
  monkeypatch.undo()
  assert main(argv) == 0
  assert "resuming" in capsys.readouterr().err
  assert Synthesizer.load(str(run)).generate(2, seed=0).std() > 0


def test_sigint_to_prepare_with_workers_exits_130_with_one_line(tmp_path):
  """Ctrl-C while worker processes decode: one line, exit 130, no worker traceback, no temporary
  left, and the same command afterwards builds the cache."""
  import signal
  import subprocess
  import sys
  import time

  corpus, cache = tmp_path / "corpus", tmp_path / "cache"
  assert main(["make-corpus", str(corpus), "--per-class", "150"]) == 0
  cmd = [
    sys.executable,
    "-m",
    "wavegan.cli",
    "prepare",
    str(corpus),
    "--out",
    str(cache),
    "--workers",
    "2",
    "--mode",
    "hop",
    "--hop",
    "4096",
    "--no-progress",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(
    cmd,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=sigint_as_usual,
  )
  deadline = time.time() + 60
  while time.time() < deadline and not (cache / "shards").exists() and proc.poll() is None:
    time.sleep(0.05)
  if proc.poll() is not None:
    pytest.skip("prepare finished before it could be interrupted")
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert err == "wavegan: interrupted\n", err
  assert not [f for d, _, fs in os.walk(cache) for f in fs if f.endswith(".part")]
  assert (
    main(
      [
        "prepare",
        str(corpus),
        "--out",
        str(cache),
        "--mode",
        "hop",
        "--hop",
        "4096",
        "--no-progress",
      ]
    )
    == 0
  )


@pytest.mark.parametrize(
  "change",
  [
    {"latent_row": "x"},
    {"latent_row": "99"},
    {"subtype": "PCM_8"},
    {"fade_out_ms": "-5"},
    {"latents": "nowhere.npy"},
  ],
  ids=[
    "row_not_a_number",
    "row_past_the_file",
    "unknown_subtype",
    "negative_fade",
    "missing_latents",
  ],
)
def test_a_damaged_manifest_row_is_a_typed_error(synth, tmp_path, change):
  from wavegan.synthesis.render import JobError, read_jobs, render, rerender

  jobs = tmp_path / "jobs.toml"
  jobs.write_text('[[job]]\nname = "j"\ncount = 2\n')
  render(synth, read_jobs(str(jobs)), str(tmp_path / "out"))
  row = json.loads((tmp_path / "out" / "manifest.json").read_text())[0]
  with pytest.raises(JobError, match="cannot be re-rendered|fade_out_ms"):
    rerender(synth, {**row, **change}, str(tmp_path / "out"), path=str(tmp_path / "again.wav"))
  assert not (tmp_path / "again.wav").exists()
