"""Input files reported truthfully, and nothing corrupt left under a final name (data_pipelines/).

Permission problems are injected (tests run as root, which chmod 000 does not stop), except in one
test that runs a small prepare as user `nobody` when `setpriv` can switch to it. Full disks are
injected as OSError(ENOSPC) at the lowest write each writer uses.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import (
  DataError,
  SliceOptions,
  builtin_corpus,
  load_clips,
  make_corpus,
  open_cache,
  prepare,
  scan_folder,
)
from data_pipelines import cache as cache_mod
from wavegan import files as files_mod
from wavegan.errors import DiskFullError

SR = 16000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tone(freq: float, seconds: float = 0.3) -> np.ndarray:
  t = np.arange(int(round(SR * seconds))) / SR
  return (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.1)).astype(np.float32)


def _wav(x: np.ndarray, subtype: str = "PCM_16") -> bytes:
  buf = io.BytesIO()
  sf.write(buf, x, SR, subtype=subtype, format="WAV")
  return buf.getvalue()


@pytest.fixture
def pack(tmp_path):
  """Two styles of three short one-shots each; returns the folder (str)."""
  root = tmp_path / "pack"
  for style, freq in (("kick", 80.0), ("snare", 300.0)):
    (root / style).mkdir(parents=True)
    for i in range(3):
      (root / style / f"{i}.wav").write_bytes(_wav(_tone(freq * (1 + i / 10))))
  return str(root)


def _is_one_clean_line(text: str) -> bool:
  """No line break, control character or lone surrogate (all unprintable): one safe line."""
  return text.isprintable()


def _parts_under(folder: str) -> list[str]:
  return [
    os.path.join(d, n)
    for d, _, names in os.walk(folder)
    for n in names
    if n.endswith(".part") or ".tmp" in n
  ]


def _index(out: str) -> dict:
  with open(os.path.join(out, "cache.json"), encoding="utf-8") as f:
    return json.load(f)


def _shards(out: str) -> dict[str, bytes]:
  folder = os.path.join(out, "shards")
  return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def _same_cache(a: str, b: str) -> None:
  """Two caches hold byte-identical shards and equal indexes."""
  assert _shards(a) == _shards(b)
  assert _index(a) == _index(b)


# ----------------------------------------------------------------------------------------------
# Truncated files through prepare


def test_truncated_files_are_skipped_and_counted(pack, tmp_path):
  whole16 = _wav(_tone(500.0, 0.5))
  whole24 = _wav(_tone(500.0, 0.5), "PCM_24")
  flac = tmp_path / "whole.flac"
  sf.write(str(flac), _tone(500.0, 2.0), SR, subtype="PCM_16")
  with open(os.path.join(pack, "kick", "cut16.wav"), "wb") as f:
    f.write(whole16[: len(whole16) * 2 // 3])
  with open(os.path.join(pack, "kick", "cut24.wav"), "wb") as f:
    f.write(whole24[: len(whole24) // 2])
  with open(os.path.join(pack, "snare", "cut.flac"), "wb") as f:
    f.write(flac.read_bytes()[: flac.stat().st_size // 2])
  report = prepare(pack, str(tmp_path / "c"), SliceOptions(slice_len=4096), workers=1)
  reasons = {os.path.basename(p): r for p, r in report.skipped}
  held16 = (len(whole16) * 2 // 3 - 44) // 2  # whole frames after the 44-byte header
  held24 = (len(whole24) // 2 - 44) // 3
  assert reasons["cut16.wav"] == f"truncated: header says 8000 frames, file holds {held16}"
  assert reasons["cut24.wav"] == f"truncated: header says 8000 frames, file holds {held24}"
  assert reasons["cut.flac"].startswith("truncated: header says 32000 frames, file holds ")
  assert report.summary() == "6 files used (6 clips), 3 skipped: 3 truncated"
  saved = json.loads(open(os.path.join(str(tmp_path / "c"), "prepare_report.json")).read())
  assert {s["kind"] for s in saved["skipped"]} == {"truncated"}


# ----------------------------------------------------------------------------------------------
# Permission denied


def _deny_open(monkeypatch, denied: str) -> None:
  """Makes Python's open() of `denied` fail as an unreadable file does."""
  real_open = builtins.open

  def fake_open(file, *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file) == denied:
      raise PermissionError(errno.EACCES, "Permission denied", denied)
    return real_open(file, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", fake_open)


def test_unreadable_file_says_permission_denied(pack, tmp_path, monkeypatch):
  denied = os.path.join(pack, "kick", "1.wav")
  _deny_open(monkeypatch, denied)
  lines: list[str] = []
  report = prepare(
    pack, str(tmp_path / "c"), SliceOptions(slice_len=4096), workers=1, log=lines.append
  )
  assert report.skipped == ((denied, "permission denied"),)
  assert report.summary() == "5 files used (5 clips), 1 skipped: 1 permission denied"
  assert lines == [f"skipped {denied}: permission denied"]
  clips = load_clips(pack, sample_rate=SR, slice_len=4096)
  assert clips.skipped == ((denied, "permission denied"),)


def _deny_scandir(monkeypatch, denied: str) -> None:
  """Makes listing the folder `denied` fail as an unreadable folder does."""
  real_scandir = os.scandir

  def fake_scandir(path="."):
    if os.path.normpath(os.fsdecode(path)) == os.path.normpath(denied):
      raise PermissionError(errno.EACCES, "Permission denied", path)
    return real_scandir(path)

  monkeypatch.setattr(os, "scandir", fake_scandir)


def test_unreadable_folder_is_reported_not_passed_over(pack, tmp_path, monkeypatch):
  denied = os.path.join(pack, "snare")
  _deny_scandir(monkeypatch, denied)
  out = str(tmp_path / "c")
  report = prepare(pack, out, SliceOptions(slice_len=4096), workers=1)
  assert report.skipped == ((denied + os.sep, "permission denied"),)
  assert report.summary() == "3 files used (3 clips), 1 skipped: 1 permission denied"
  saved = json.loads(open(os.path.join(out, "prepare_report.json")).read())
  assert saved["skipped"] == [
    {"path": denied + os.sep, "reason": "permission denied", "kind": "permission denied"}
  ]
  assert open_cache(out).skipped == ((denied + os.sep, "permission denied"),)
  # The same for clips in memory; a bare scan refuses rather than hide the folder.
  assert load_clips(pack, sample_rate=SR, slice_len=4096).skipped == report.skipped
  with pytest.raises(DataError, match=r"snare/: permission denied$"):
    scan_folder(pack)
  # The data folder itself unreadable: one line.
  _deny_scandir(monkeypatch, pack)
  with pytest.raises(DataError, match=r"pack: permission denied \(cannot list the folder\)$"):
    prepare(pack, out, SliceOptions(slice_len=4096), workers=1)


_AS_NOBODY = """
import json, sys
from data_pipelines import SliceOptions, prepare
report = prepare(sys.argv[1], sys.argv[2], SliceOptions(slice_len=4096), workers=1)
print(json.dumps(report.skipped))
"""


def _nobody_can_run_python() -> bool:
  if os.geteuid() != 0 or shutil.which("setpriv") is None:
    return False
  probe = subprocess.run(
    [
      "setpriv",
      "--reuid=nobody",
      "--regid=nogroup",
      "--clear-groups",
      sys.executable,
      "-c",
      "import data_pipelines",
    ],
    cwd=REPO,
    capture_output=True,
    check=False,
    timeout=60,
  )
  return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_python(), reason="needs root, setpriv and user nobody")
def test_real_permissions_as_user_nobody():
  top = tempfile.mkdtemp(prefix="wavegan-perm-")
  try:
    os.chmod(top, 0o755)
    data = os.path.join(top, "data")
    for style in ("kick", "locked"):
      os.makedirs(os.path.join(data, style))
      for i in range(2):
        with open(os.path.join(data, style, f"{i}.wav"), "wb") as f:
          f.write(_wav(_tone(100.0 + 50 * i)))
    for d, _, names in os.walk(data):
      os.chmod(d, 0o755)
      for n in names:
        os.chmod(os.path.join(d, n), 0o644)
    os.chmod(os.path.join(data, "kick", "1.wav"), 0o000)
    os.chmod(os.path.join(data, "locked"), 0o000)
    out = os.path.join(top, "out")
    os.makedirs(out)
    os.chmod(out, 0o777)
    run = subprocess.run(
      [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        sys.executable,
        "-c",
        _AS_NOBODY,
        data,
        os.path.join(out, "c"),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
      timeout=120,
      env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert run.returncode == 0, run.stderr
    skipped = json.loads(run.stdout.strip().splitlines()[-1])
    assert skipped == [
      [os.path.join(data, "kick", "1.wav"), "permission denied"],
      [os.path.join(data, "locked", ""), "permission denied"],
    ]
  finally:
    for d, _, _ in os.walk(top):
      os.chmod(d, 0o755)
    shutil.rmtree(top, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Odd characters in file names


def test_odd_file_names_are_escaped_in_messages_and_exact_in_reports(pack, tmp_path):
  kick = os.path.join(pack, "kick")
  odd = os.path.join(kick, "new\nline\x1b[31m.wav")  # newline and ESC
  raw = os.path.join(os.fsencode(kick), b"latin\xff.wav")  # not valid UTF-8
  bad_odd = os.path.join(kick, "bad\t\x1b.wav")
  bad_raw = os.path.join(os.fsencode(kick), b"bad\xfe\n.wav")
  for path, data in (
    (odd, _wav(_tone(90.0))),
    (raw, _wav(_tone(95.0))),
    (bad_odd, b"not audio " * 50),
    (bad_raw, _wav(_tone(99.0))[:60]),
  ):
    with open(path, "wb") as f:
      f.write(data)
  raw_name, bad_raw_name = os.fsdecode(raw), os.fsdecode(bad_raw)
  assert "\udcff" in raw_name  # Python shows the undecodable byte as a surrogate
  lines: list[str] = []
  out = str(tmp_path / "c")
  report = prepare(pack, out, SliceOptions(slice_len=4096), workers=1, log=lines.append)
  assert report.files_used == 8
  assert dict(report.skipped).keys() == {bad_odd, bad_raw_name}
  assert dict(report.skipped)[bad_raw_name].startswith("truncated: ")
  assert len(lines) == 2 and all(_is_one_clean_line(line) for line in lines)
  assert "bad\\t\\x1b.wav" in "".join(lines) and "bad\\udcfe\\n.wav" in "".join(lines)
  # The JSON files keep the names exactly.
  saved = json.loads(open(os.path.join(out, "prepare_report.json"), encoding="utf-8").read())
  assert {s["path"] for s in saved["skipped"]} == {bad_odd, bad_raw_name}
  cache = open_cache(out)
  assert {"kick/new\nline\x1b[31m.wav", "kick/latin\udcff.wav"} <= set(cache.sources)
  assert cache.gather(np.arange(len(cache))).shape == (8, 4096, 1)
  # Errors name such a file in one line too.
  clips = load_clips(pack, sample_rate=SR, slice_len=4096)
  assert len(clips) == 8
  with pytest.raises(DataError) as info:
    scan_folder(odd)
  assert _is_one_clean_line(str(info.value)) and "is a file, not a folder" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Folders that are files


def test_out_or_data_that_is_a_file_is_one_line(pack, tmp_path):
  a_file = tmp_path / "notes.txt"
  a_file.write_text("hi")
  with pytest.raises(DataError, match=r"notes\.txt: is a file, not a folder; the prepared cache "):
    prepare(pack, str(a_file), SliceOptions(slice_len=4096), workers=1)
  with pytest.raises(DataError, match=r"notes\.txt: is a file, not a folder$"):
    prepare(str(a_file), str(tmp_path / "c"), SliceOptions(slice_len=4096), workers=1)
  with pytest.raises(DataError, match=r"notes\.txt: is a file, not a folder$"):
    load_clips(str(a_file), sample_rate=SR, slice_len=4096)
  assert a_file.read_text() == "hi"


# ----------------------------------------------------------------------------------------------
# Full disks: nothing under a final name, no temporaries, and a rerun completes the cache


class _Fault:
  """Counts calls of a write function and fails call number `fail_at` with ENOSPC."""

  def __init__(self, real, fail_at: int, partial: bool = True):
    self.real, self.fail_at, self.partial, self.calls = real, fail_at, partial, 0

  def np_save(self, file, arr, *args, **kwargs):
    self.calls += 1
    if self.calls == self.fail_at:
      if self.partial:  # some bytes reach the disk before it fills
        file.write(b"\x93NUMPY" + b"\0" * 100)
      raise OSError(errno.ENOSPC, "No space left on device")
    return self.real(file, arr, *args, **kwargs)


def _small_shards(monkeypatch):
  monkeypatch.setattr(cache_mod, "SHARD_BYTES", 3 * 4096 * 2)  # three int16 windows a shard


def _check_disk_full_message(err: DiskFullError, out: str) -> None:
  """One line naming the disk, the folder written and the space needed."""
  text = str(err)
  assert "\n" not in text and "needs about" in text
  assert f"no space left on {files_mod.mount_point(out)} (" in text and out in text


def test_full_disk_in_a_shard_then_rerun_gives_the_clean_cache(pack, tmp_path, monkeypatch):
  opts = SliceOptions(slice_len=4096)
  _small_shards(monkeypatch)
  clean = str(tmp_path / "clean")
  prepare(pack, clean, opts, workers=1)
  assert len(_shards(clean)) == 2
  out = str(tmp_path / "c")
  fault = _Fault(np.save, fail_at=2)
  with monkeypatch.context() as m:
    m.setattr(np, "save", fault.np_save)
    with pytest.raises(DiskFullError) as info:
      prepare(pack, out, opts, workers=1)
  _check_disk_full_message(info.value, out)
  assert not _parts_under(out)
  assert not os.path.exists(os.path.join(out, "cache.json"))
  assert os.listdir(os.path.join(out, "shards")) == []  # the first shard is taken back too
  prepare(pack, out, opts, workers=1)
  _same_cache(out, clean)


def test_full_disk_while_updating_keeps_the_old_cache(pack, tmp_path, monkeypatch):
  opts = SliceOptions(slice_len=4096)
  _small_shards(monkeypatch)
  out = str(tmp_path / "c")
  prepare(pack, out, opts, workers=1)
  before_index, before_shards = _index(out), _shards(out)
  for i in range(4):  # the folder grows
    with open(os.path.join(pack, "kick", f"new{i}.wav"), "wb") as f:
      f.write(_wav(_tone(60.0 + i)))
  with monkeypatch.context() as m:
    m.setattr(np, "save", _Fault(np.save, fail_at=2).np_save)
    with pytest.raises(DiskFullError):
      prepare(pack, out, opts, workers=1)
  assert _index(out) == before_index and _shards(out) == before_shards  # still the old cache
  assert len(open_cache(out)) == 6 and not _parts_under(out)
  prepare(pack, out, opts, workers=1)
  fresh = str(tmp_path / "fresh")
  prepare(pack, fresh, opts, workers=1)
  a, b = open_cache(out), open_cache(fresh)
  assert a.sources == b.sources and len(a) == 10
  np.testing.assert_array_equal(a.gather(np.arange(len(a))), b.gather(np.arange(len(b))))


def test_silent_short_write_of_a_shard_is_caught(pack, tmp_path, monkeypatch):
  real_save = np.save

  def short_save(file, arr, *args, **kwargs):
    buf = io.BytesIO()
    real_save(buf, arr, *args, **kwargs)
    file.write(buf.getvalue()[:-100])  # the write "succeeds" but the last bytes never land

  monkeypatch.setattr(np, "save", short_save)
  out = str(tmp_path / "c")
  with pytest.raises(DiskFullError, match="needs about"):
    prepare(pack, out, SliceOptions(slice_len=4096), workers=1)
  assert not _parts_under(out) and os.listdir(os.path.join(out, "shards")) == []


def _fail_writes_to(monkeypatch, module, suffix: str) -> None:
  """Makes `module`'s open() of files ending in `suffix` fail with ENOSPC on the first write."""
  real_open = builtins.open

  class Full(io.FileIO):
    def write(self, data):
      super().write(bytes(data)[:10])
      raise OSError(errno.ENOSPC, "No space left on device")

  def fake_open(file, mode="r", *args, **kwargs):
    if "w" in mode and os.fsdecode(file).endswith(suffix):
      return Full(file, "w")
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_full_disk_in_the_index_then_rerun_gives_the_clean_cache(pack, tmp_path, monkeypatch):
  opts = SliceOptions(slice_len=4096)
  clean = str(tmp_path / "clean")
  prepare(pack, clean, opts, workers=1)
  out = str(tmp_path / "c")
  with monkeypatch.context() as m:
    _fail_writes_to(m, files_mod, "cache.json.part")
    with pytest.raises(DiskFullError) as info:
      prepare(pack, out, opts, workers=1)
  assert "cache.json" in str(info.value) and "needs about" in str(info.value)
  assert not _parts_under(out) and not os.path.exists(os.path.join(out, "cache.json"))
  assert os.listdir(os.path.join(out, "shards")) == []
  prepare(pack, out, opts, workers=1)
  _same_cache(out, clean)


def test_leftovers_of_a_killed_run_are_cleared(pack, tmp_path):
  opts = SliceOptions(slice_len=4096)
  clean = str(tmp_path / "clean")
  prepare(pack, clean, opts, workers=1)
  out = str(tmp_path / "c")
  os.makedirs(os.path.join(out, "shards"))
  for name in ("00000.npy", "00003.npy", "00004.npy.part", "00001.tmp.npy"):
    with open(os.path.join(out, "shards", name), "wb") as f:
      f.write(b"half a shard")
  with open(os.path.join(out, "cache.json.part"), "w") as f:
    f.write('{"version": 1, "shar')
  prepare(pack, out, opts, workers=1)
  _same_cache(out, clean)
  assert not _parts_under(out)


def test_full_disk_in_the_corpus_then_rerun_gives_the_same_corpus(tmp_path, monkeypatch):
  from data_pipelines import corpus as corpus_mod

  kwargs = dict(per_class=2, sample_rate=8000, duration=0.1)
  make_corpus(str(tmp_path / "clean"), **kwargs)
  out = str(tmp_path / "c")
  with monkeypatch.context() as m:
    _fail_writes_to(m, corpus_mod, "snare_0001.wav.part")
    with pytest.raises(DiskFullError) as info:
      make_corpus(out, **kwargs)
  assert "\n" not in str(info.value) and "snare_0001.wav" in str(info.value)
  assert not _parts_under(out) and not os.path.exists(os.path.join(out, "snare", "snare_0001.wav"))
  for d, _, names in os.walk(out):  # what is there is whole
    for n in names:
      assert sf.info(os.path.join(d, n)).frames == 800
  make_corpus(out, **kwargs)
  for style in os.listdir(tmp_path / "clean"):
    for name in os.listdir(tmp_path / "clean" / style):
      assert (tmp_path / "c" / style / name).read_bytes() == (
        tmp_path / "clean" / style / name
      ).read_bytes()


def test_corpus_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
  monkeypatch.setattr(files_mod, "free_bytes", lambda path: 10_000)
  with pytest.raises(
    DiskFullError, match=r"a corpus of 12 clips needs about 192\.5 kB on .*10\.0 kB free"
  ):
    make_corpus(str(tmp_path / "c"), per_class=2, sample_rate=8000, duration=1.0)
  assert not os.path.exists(tmp_path / "c")
  with pytest.raises(DiskFullError):
    builtin_corpus(str(tmp_path / "cache"), per_class=2, sample_rate=8000)
  assert os.listdir(tmp_path / "cache") == []
