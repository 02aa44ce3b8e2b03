"""The prepared cache: contents, labels, incremental re-prepare, skip report, workers (data_pipelines/cache.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import (
  DataError,
  SliceOptions,
  is_cache,
  load_clips,
  open_cache,
  prepare,
  scan_folder,
)
from data_pipelines import cache as cache_mod

SR = 16000


def _tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
  t = np.arange(int(round(sr * seconds))) / sr
  return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.3)).astype(np.float32)


@pytest.fixture
def pack(tmp_path):
  """Two styles of short one-shots plus one long file; returns the folder."""
  root = tmp_path / "pack"
  for style, freq in (("kick", 80.0), ("snare", 300.0)):
    (root / style).mkdir(parents=True)
    for i in range(3):
      sf.write(root / style / f"{i}.wav", _tone(freq * (1 + i / 10), 0.3), SR, subtype="PCM_16")
  sf.write(root / "snare" / "long.flac", _tone(500.0, 2.5, amp=0.3, sr=44100), 44100)
  return root


def test_cache_reads_like_load_clips(pack, tmp_path):
  opts = SliceOptions(slice_len=16384, mode="hop", hop=8192, pad_mode="zero")
  report = prepare(str(pack), str(tmp_path / "c"), opts, workers=1)
  cache = open_cache(str(tmp_path / "c"))
  ref = load_clips(str(pack), sample_rate=SR, slice_len=16384, mode="hop", hop=8192)
  # The long file: 2.5 s at 16 kHz = 40000 samples -> windows at 0, 8192, ..., 32768 (5 windows).
  assert report.clips == len(cache) == len(ref) == 6 + 5
  assert report.files_used == 7 and report.decoded == 7 and not report.skipped
  assert cache.sources == tuple(os.path.relpath(p, pack) for p in ref.sources)
  np.testing.assert_array_equal(cache.offsets, ref.offsets)
  long_rows = [i for i, s in enumerate(cache.sources) if s.endswith("long.flac")]
  np.testing.assert_array_equal(cache.offsets[long_rows], [0, 8192, 16384, 24576, 32768])
  # int16 storage: one quantisation step of the float windows.
  np.testing.assert_allclose(cache.gather(np.arange(len(cache))), ref.audio, atol=1 / 32767 + 1e-7)
  ids, vocab = cache.labels()
  assert vocab == ref.styles == ("kick", "snare")
  np.testing.assert_array_equal(ids, ref.labels)
  # Gathers keep the requested order and shape.
  idx = np.array([[5, 0], [10, 3]])
  np.testing.assert_array_equal(cache.gather(idx), cache.gather(np.arange(len(cache)))[idx])


def test_float32_store_is_exact(pack, tmp_path):
  prepare(str(pack), str(tmp_path / "c"), SliceOptions(slice_len=16384), dtype="float32", workers=1)
  cache = open_cache(str(tmp_path / "c"))
  ref = load_clips(str(pack), sample_rate=SR, slice_len=16384)
  np.testing.assert_array_equal(cache.gather(np.arange(len(cache))), ref.audio)


def test_manifest_label_fields_attributes_and_vocab(pack, tmp_path):
  manifest = tmp_path / "labels.csv"
  rows = ["path,instrument,technique,pitch"]
  for f in scan_folder(str(pack)):
    rel = os.path.relpath(f.path, pack)
    if rel.startswith("kick/2"):
      continue  # not listed: skipped
    technique = "rim" if "1" in rel else "open"
    rows.append(f"{rel},{'drum' if 'kick' in rel else 'snare'},{technique},{len(rel) / 10}")
  manifest.write_text("\n".join(rows) + "\n")
  report = prepare(
    str(pack), str(tmp_path / "c"), SliceOptions(slice_len=16384), manifest=str(manifest), workers=1
  )
  assert [(os.path.basename(p), r) for p, r in report.skipped] == [("2.wav", "not in the manifest")]
  cache = open_cache(str(tmp_path / "c"))
  assert cache.label_fields == ("folder", "instrument", "technique")
  assert cache.attribute_names == ("pitch",)
  with pytest.raises(DataError, match="instrument, technique"):
    cache.label_field("")  # two label fields: the user must choose
  ids, vocab = cache.labels("technique")
  assert vocab == ("open", "rim")
  assert [vocab[i] for i in ids] == ["rim" if "1" in s else "open" for s in cache.sources]
  pitch = cache.attributes()["pitch"]
  np.testing.assert_allclose(pitch, [len(s) / 10 for s in cache.sources], rtol=1e-6)
  info = json.loads((tmp_path / "c" / "cache.json").read_text())
  assert info["vocab"] == {
    "folder": ["kick", "snare"],
    "instrument": ["drum", "snare"],
    "technique": ["open", "rim"],
  }
  # Relabelling through the manifest needs no decoding; listing the skipped file decodes just it.
  manifest.write_text(manifest.read_text() + "kick/2.wav,drum,open,0.5\n")
  again = prepare(
    str(pack), str(tmp_path / "c"), SliceOptions(slice_len=16384), manifest=str(manifest), workers=1
  )
  assert again.decoded == 1 and not again.skipped


def test_incremental_prepare_matches_a_fresh_one(pack, tmp_path):
  opts = SliceOptions(slice_len=16384)
  out = str(tmp_path / "c")
  assert prepare(str(pack), out, opts, workers=1).decoded == 7
  assert prepare(str(pack), out, opts, workers=1).decoded == 0  # nothing changed
  # Grow the folder, change one file and remove another.
  sf.write(pack / "kick" / "new.wav", _tone(60.0, 0.4), SR)
  sf.write(pack / "snare" / "0.wav", _tone(900.0, 0.2), SR)
  os.utime(pack / "snare" / "0.wav", ns=(1, 1))  # a different mtime even on coarse clocks
  os.remove(pack / "kick" / "1.wav")
  report = prepare(str(pack), out, opts, workers=1)
  assert report.decoded == 2 and report.files_used == 7
  fresh = str(tmp_path / "fresh")
  prepare(str(pack), fresh, opts, workers=1)
  a, b = open_cache(out), open_cache(fresh)
  assert a.sources == b.sources
  np.testing.assert_array_equal(a.gather(np.arange(len(a))), b.gather(np.arange(len(b))))
  np.testing.assert_array_equal(a.labels()[0], b.labels()[0])
  # Superseded shards are deleted once nothing refers to them.
  assert sorted(os.listdir(os.path.join(out, "shards"))) == sorted(
    json.loads(open(os.path.join(out, "cache.json")).read())["shards"]
  )


def test_other_options_are_refused_unless_forced(pack, tmp_path):
  out = str(tmp_path / "c")
  prepare(str(pack), out, SliceOptions(slice_len=16384), workers=1)
  with pytest.raises(DataError, match="slice_len=16384"):
    prepare(str(pack), out, SliceOptions(slice_len=32768), workers=1)
  report = prepare(str(pack), out, SliceOptions(slice_len=32768), workers=1, force=True)
  assert report.decoded == 7 and open_cache(out).slice_len == 32768


def test_skip_report_names_every_bad_file(tmp_path, monkeypatch):
  root = tmp_path / "messy"
  (root / "hit").mkdir(parents=True)
  for i in range(3):
    sf.write(root / "hit" / f"ok{i}.wav", _tone(200.0 + 50 * i, 0.3), SR)
  (root / "hit" / "empty.wav").write_bytes(b"")
  (root / "hit" / "text.wav").write_text("this is not audio\n" * 20)
  good = (root / "hit" / "ok0.wav").read_bytes()
  (root / "hit" / "truncated.wav").write_bytes(good[:30])
  # libsndfile decodes half of this one without a word.
  (root / "hit" / "halved.wav").write_bytes(good[: len(good) // 2])
  nan = _tone(300.0, 0.3)
  nan[100] = np.nan
  sf.write(root / "hit" / "nan.wav", nan, SR, subtype="FLOAT")
  sf.write(root / "hit" / "tiny.wav", _tone(300.0, 0.005), SR)
  sf.write(root / "hit" / "long.wav", _tone(300.0, 3.0), SR)
  sf.write(root / "hit" / "silent.wav", np.zeros(8000, np.float32), SR)
  # A file listed by the scan that vanishes before it is read.
  real_scan = cache_mod.scan_folder
  monkeypatch.setattr(cache_mod, "scan_folder", lambda d, *a: _with_ghost(real_scan(d, *a), d))
  out = tmp_path / "c"
  report = prepare(str(root), str(out), SliceOptions(slice_len=16384, max_seconds=2.0), workers=1)
  reasons = {os.path.basename(p): r for p, r in report.skipped}
  assert set(reasons) == {
    "empty.wav",
    "text.wav",
    "truncated.wav",
    "halved.wav",
    "nan.wav",
    "tiny.wav",
    "long.wav",
    "silent.wav",
    "zz_gone.wav",
  }
  assert reasons["nan.wav"] == "contains NaN or Inf samples"
  assert reasons["tiny.wav"].startswith("shorter than 10 ms")
  assert reasons["long.wav"].startswith("longer than 2 s")
  assert reasons["silent.wav"].startswith("silent")
  assert reasons["zz_gone.wav"] == "no such file"
  assert reasons["truncated.wav"] == "truncated: file ends inside its header, at 30 of 9644 bytes"
  assert reasons["halved.wav"] == "truncated: header says 4800 frames, file holds 2389"
  for name in ("empty.wav", "text.wav"):
    assert reasons[name].startswith("cannot decode") or reasons[name].startswith("empty"), name
  saved = json.loads((out / "prepare_report.json").read_text())
  assert saved["summary"] == report.summary()
  assert report.summary().startswith("3 files used (3 clips), 9 skipped: ")
  assert "2 truncated" in report.summary()  # a kind of its own, not lumped in with "unreadable"
  assert {os.path.basename(s["path"]): s["reason"] for s in saved["skipped"]} == reasons
  kinds = {os.path.basename(s["path"]): s["kind"] for s in saved["skipped"]}
  assert kinds["halved.wav"] == "truncated"
  assert len(open_cache(str(out))) == 3


def _with_ghost(files, root):
  """The scan's files plus one that does not exist (deleted between the scan and the read)."""
  from data_pipelines import AudioFile

  return sorted(
    files + [AudioFile(os.path.join(root, "hit", "zz_gone.wav"), "hit")], key=lambda f: f.path
  )


def test_nothing_usable_is_a_clear_error(tmp_path):
  root = tmp_path / "bad"
  root.mkdir()
  (root / "a.wav").write_text("nope")
  with pytest.raises(DataError, match=r"none of the 1 audio files could be used.*prepare_report"):
    prepare(str(root), str(tmp_path / "c"), SliceOptions(slice_len=16384), workers=1)
  assert not is_cache(str(tmp_path / "c"))
  assert (tmp_path / "c" / "prepare_report.json").exists()


def test_symlink_loop_does_not_hang(pack, tmp_path):
  os.symlink(pack, pack / "kick" / "loop")
  report = prepare(str(pack), str(tmp_path / "c"), SliceOptions(slice_len=16384), workers=1)
  assert report.files_used == 7


def test_worker_processes_give_the_same_cache(tmp_path):
  root = tmp_path / "many"
  rng = np.random.default_rng(0)
  for i in range(40):
    style = ("a", "b")[i % 2]
    (root / style).mkdir(parents=True, exist_ok=True)
    sf.write(root / style / f"{i:02d}.wav", _tone(100 + 20 * i, 0.05 + rng.uniform(0, 0.1)), SR)
  (root / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
  opts = SliceOptions(slice_len=16384)
  serial = prepare(str(root), str(tmp_path / "s"), opts, workers=1)
  parallel = prepare(str(root), str(tmp_path / "p"), opts, workers=2)
  assert parallel.decoded == serial.decoded == 41 >= cache_mod.MIN_POOL_JOBS
  assert parallel.skipped == serial.skipped and len(parallel.skipped) == 1
  a, b = open_cache(str(tmp_path / "s")), open_cache(str(tmp_path / "p"))
  np.testing.assert_array_equal(a.gather(np.arange(len(a))), b.gather(np.arange(len(b))))
  # Byte-identical shards: the pool returns results in file order.
  for name in os.listdir(tmp_path / "s" / "shards"):
    assert (tmp_path / "s" / "shards" / name).read_bytes() == (
      tmp_path / "p" / "shards" / name
    ).read_bytes()


def test_first_reads_from_many_threads_at_once(pack, tmp_path):
  # Loader threads all make the first read of a freshly opened cache together; opening the shard
  # maps must not race (np.load's header parse is not thread-safe on every CPython).
  import concurrent.futures
  import pickle
  import threading

  prepare(
    str(pack), str(tmp_path / "c"), SliceOptions(slice_len=4096, mode="hop", hop=1024), workers=1
  )
  want = open_cache(str(tmp_path / "c")).gather(np.arange(8))
  for _ in range(30):
    # A pickled copy (as a loader worker process gets) opens its maps on first read.
    cache = pickle.loads(pickle.dumps(open_cache(str(tmp_path / "c"))))
    barrier = threading.Barrier(8)

    def read(_, barrier=barrier, cache=cache):
      barrier.wait()
      return cache.gather(np.arange(8))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      for got in pool.map(read, range(8)):
        np.testing.assert_array_equal(got, want)
