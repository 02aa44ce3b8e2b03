"""Read-only commands pointed at a folder that holds no run change nothing anywhere.

`generate`, `export`, `render --workdir` and `evaluate` read a run; given a folder without one
they must say so in one line (exit code 2) and leave it exactly as it was: no empty
`checkpoints/` (which orbax used to create), no output folder, no report folder.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from wavegan.cli import main

COMMANDS = ("generate", "export", "render", "evaluate")


def _snapshot(root: pathlib.Path) -> list[tuple[str, int, int]]:
  """Every path under `root` with its size and modification time."""
  out = []
  for p in sorted(root.rglob("*")):
    st = p.lstat()
    out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
  return out


def _argv(command: str, workdir: pathlib.Path, elsewhere: pathlib.Path) -> list[str]:
  run = str(workdir)
  if command == "generate":
    return ["generate", "--workdir", run, "--n", "2", "--out", str(elsewhere / "clips")]
  if command == "export":
    return ["export", "--workdir", run, "--out", str(elsewhere / "m.wgan")]
  if command == "render":
    jobs = elsewhere / "jobs.toml"
    jobs.write_text('[[job]]\nname = "a"\ncount = 2\n')
    return ["render", str(jobs), "--workdir", run, "--out", str(elsewhere / "rendered")]
  return ["evaluate", "--workdir", run, "--n", "4"]  # default report folder: inside the run


def _fill(workdir: pathlib.Path, contents: str) -> None:
  workdir.mkdir()
  if contents == "unrelated files":
    (workdir / "notes.txt").write_text("not a run\n")
    (workdir / "audio").mkdir()
    (workdir / "audio" / "kick.wav").write_bytes(b"RIFF....")
  elif contents == "empty checkpoints folder":  # what older versions left behind
    (workdir / "checkpoints").mkdir()


@pytest.mark.parametrize("contents", ["empty", "unrelated files", "empty checkpoints folder"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_without_a_run_is_refused_and_left_as_it_was(tmp_path, capsys, command, contents):
  workdir, elsewhere = tmp_path / "folder", tmp_path / "elsewhere"
  _fill(workdir, contents)
  elsewhere.mkdir()
  argv = _argv(command, workdir, elsewhere)
  before, before_elsewhere = _snapshot(workdir), _snapshot(elsewhere)

  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "holds no run" in err, err
  assert _snapshot(workdir) == before
  assert _snapshot(elsewhere) == before_elsewhere  # no output folder or file either


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_folder_is_not_created(tmp_path, capsys, command):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  assert main(_argv(command, tmp_path / "missing", elsewhere)) == 2
  assert capsys.readouterr().err.count("\n") == 1
  assert not (tmp_path / "missing").exists()
  assert sorted(os.listdir(elsewhere)) == (["jobs.toml"] if command == "render" else [])
