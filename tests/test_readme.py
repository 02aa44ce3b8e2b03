"""The README's examples run: every fenced command, Python and TOML block is extracted and executed
on a tiny model with temporary paths, so a documented example can never rot unnoticed."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from wavegan.cli import build_parser, main
from wavegan.config import ConfigError, apply_overrides
from wavegan.presets import preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
COMMANDS = (
  "make-corpus",
  "prepare",
  "train",
  "generate",
  "export",
  "render",
  "evaluate",
  "plot",
  "studio",
)
WAVEGAN = re.compile(r"(?:\.venv/bin/)?wavegan\s+(?:%s)\b[^\"\n]*" % "|".join(COMMANDS))


def fenced_blocks(lang: str) -> list[str]:
  """The README's fenced blocks of one language, indented ones (inside lists) included."""
  text = open(README, encoding="utf-8").read()
  pattern = re.compile(r"^([ \t]*)```%s\n(.*?)^\1```" % lang, re.M | re.S)
  return [re.sub(r"^" + m.group(1), "", m.group(2), flags=re.M) for m in pattern.finditer(text)]


def commands(block: str) -> list[list[str]]:
  """The `wavegan ...` commands of a shell block, continuation lines joined, comments dropped,
  also when wrapped in another launcher (`srun ...`, `ssh ... --command "..."`)."""
  joined = re.sub(r"\\\n\s*", " ", block)
  out = []
  for line in joined.splitlines():
    m = WAVEGAN.search(line)
    if m:
      words = shlex.split(m.group(0), comments=True)
      out.append(words[1:])  # without the program name
  return out


def is_synopsis(argv: list[str]) -> bool:
  return any(re.search(r"[\[\]|()]|^[A-Z_]+(\.[a-z]+)?$", a) for a in argv)


ALL_COMMANDS = [argv for b in fenced_blocks("bash") for argv in commands(b)]


def test_the_readme_has_the_examples_this_test_runs():
  assert len(ALL_COMMANDS) >= 12
  assert len(fenced_blocks("python")) >= 1 and len(fenced_blocks("toml")) >= 1


@pytest.mark.parametrize("argv", [a for a in ALL_COMMANDS if is_synopsis(a)], ids=" ".join)
def test_every_option_of_the_synopsis_exists(argv):
  """Usage lines (with [optional] and PLACEHOLDER parts): each option named is one the command has."""
  sub = build_parser()._subparsers._group_actions[0].choices[argv[0]]
  known = {o for action in sub._actions for o in action.option_strings}
  named = set(re.findall(r"--[a-z][a-z-]*", " ".join(argv)))
  assert named and named <= known, named - known


def test_every_documented_override_is_valid():
  """Every `--set section.key=value` in the README applies to a preset and validates."""
  text = open(README, encoding="utf-8").read()
  sets = re.findall(r"--set ([a-z_]+\.[a-z_]+=[^\s`]+)", text)
  assert len(sets) >= 8
  for item in sets:
    if item == "section.key=value" or re.fullmatch(r"[A-Z]+", item.split("=", 1)[1]):
      continue  # the form itself, or a placeholder such as eval.every=N
    apply_overrides(preset("paper"), [item]).validate()  # the preset of new runs
    if item.startswith("compute.grad_accum="):  # the demo's loss refuses them, as documented
      with pytest.raises(ConfigError, match="optim.stft_weight"):
        apply_overrides(preset("demo"), [item]).validate()
      item = f"{item} optim.stft_weight=0"
    apply_overrides(preset("demo"), item.split(" ")).validate()


def test_multi_process_commands_parse():
  """The multi-host examples need several hosts (tests/test_distributed.py runs two processes on
  localhost); here they must at least parse as documented."""
  multi = [a for a in ALL_COMMANDS if "--coordinator" in a and not is_synopsis(a)]
  assert len(multi) == 2
  for argv in multi:
    args = build_parser().parse_args(argv)
    assert args.num_processes == 2 and args.coordinator == "host0:1234"


def test_benchmark_commands_exist_with_their_options():
  for block in fenced_blocks("bash"):
    for line in block.splitlines():
      m = re.match(r"\.venv/bin/python (benchmarks/\S+\.py)(.*)", line)
      if not m:
        continue
      options = set(re.findall(r"--[a-z][a-z-]*", m.group(2).split("#")[0]))
      res = subprocess.run(
        [sys.executable, m.group(1), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
      )
      assert res.returncode == 0, res.stderr
      assert all(o in res.stdout for o in options), (m.group(1), options)


@pytest.fixture(scope="module")
def readme_world(tmp_path_factory):
  """Runs the README's runnable shell commands in order, with a tiny model and temporary paths,
  and exports the resulting run as the model file the Python and TOML examples load."""
  tmp = tmp_path_factory.mktemp("readme")
  samples, runs = tmp / "samples", tmp / "runs"
  assert main(["make-corpus", str(samples), "--per-class", "2"]) == 0
  paths = {
    "~/samples-cache": str(tmp / "samples-cache"),
    "~/samples": str(samples),
    "/mnt/shared/runs/": str(runs) + "/",
    "/shared/runs/": str(runs) + "/",
    "runs/": str(runs) + "/",
    "/mnt/shared/samples": str(samples),
    "/shared/samples": str(samples),
  }
  ran, steps = [], 0
  for argv in ALL_COMMANDS:
    if is_synopsis(argv) or "--coordinator" in argv or argv[0] == "studio":
      continue  # the studio serves until stopped: tests/test_browser.py drives it
    argv = [
      next((a.replace(k, v, 1) for k, v in paths.items() if a.startswith(k)), a) for a in argv
    ]
    if argv in ran:
      continue  # the same command documented for another launcher (one GPU, srun, a TPU slice)
    ran.append(list(argv))
    if argv[0] == "train":  # the tiny model, one more step each time (later ones resume)
      steps += 1
      argv += ["--preset", "tiny", "--steps", str(steps), "--no-progress"]
    if argv[0] == "prepare":
      argv += ["--no-progress"]
    assert main(argv) == 0, argv
  run = str(runs / "drums")
  model = str(tmp / "drums.wgan")
  assert main(["export", "--workdir", run, "--out", model]) == 0
  return {"tmp": tmp, "model": model, "ran": ran}


def test_shell_examples_run(readme_world):
  kinds = [argv[0] for argv in readme_world["ran"]]
  assert kinds.count("prepare") >= 1 and kinds.count("train") >= 2


def test_python_example_runs(readme_world):
  (code,) = fenced_blocks("python")
  scope: dict = {}
  exec(
    compile(code.replace('"drums.wgan"', repr(readme_world["model"])), "README.md", "exec"), scope
  )
  assert scope["snares"].shape == (500, 16384, 1)
  assert scope["walk"].shape == (16, 16384, 1) and np.isfinite(scope["blend"]).all()


def _render_toml(readme_world, toml: str, name: str) -> str:
  jobs = readme_world["tmp"] / f"{name}.toml"
  jobs.write_text(toml)
  out = str(readme_world["tmp"] / f"{name}_render")
  assert (
    main(["render", str(jobs), "--model", readme_world["model"], "--out", out, "--no-progress"])
    == 0
  )
  return out


def _rerender_each_row(readme_world, out: str) -> None:
  from wavegan import Synthesizer
  from wavegan.synthesis.render import rerender

  synth = Synthesizer.load(readme_world["model"])
  with open(os.path.join(out, "manifest.csv")) as f:
    rows = list(csv.DictReader(f))
  for row in rows[::7]:
    again = rerender(synth, row, out, path=os.path.join(out, "again." + row["format"]))
    np.testing.assert_array_equal(sf.read(again)[0], sf.read(os.path.join(out, row["file"]))[0])


def test_toml_example_renders_and_rerenders(readme_world):
  (toml,) = fenced_blocks("toml")
  out = _render_toml(readme_world, toml, "readme")
  assert len(os.listdir(os.path.join(out, "walk"))) == 32
  _rerender_each_row(readme_world, out)


def test_toml_example_with_default_rate_and_normalize(readme_world):
  """The documented fade with the defaults left in place (once: 'output array is read-only')."""
  (toml,) = fenced_blocks("toml")
  toml = re.sub(r"^(sample_rate|normalize|peak_db) = .*\n", "", toml, flags=re.M)
  out = _render_toml(readme_world, toml, "defaults")
  x, rate = sf.read(os.path.join(out, "walk", "kick0.5-snare0.5_000.flac"))
  assert rate == 16000 and np.max(np.abs(x[-3:])) < 1e-3  # faded out at the model's rate
  _rerender_each_row(readme_world, out)
