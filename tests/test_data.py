"""Tests for folder scanning, decoding, clip loading and the batch source (data_pipelines/)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import (
  AudioDecodeError,
  AudioFile,
  BatchSource,
  ClipSet,
  DataError,
  decode,
  load_clips,
  scan_folder,
)


def _tone(freq: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
  """Decaying sine, float32 [T]."""
  t = np.arange(int(round(sample_rate * seconds))) / sample_rate
  return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.2)).astype(np.float32)


@pytest.fixture
def tree(tmp_path):
  """A small mixed-format corpus: returns its root."""
  root = tmp_path / "pack"
  for d in ("kick", "snare/sub", "hat"):
    (root / d).mkdir(parents=True)
  sf.write(root / "kick" / "a.wav", _tone(440, 22050, 0.5), 22050, subtype="PCM_16")
  stereo = np.stack([_tone(300, 44101, 0.25), _tone(300, 44101, 0.25, amp=0.25)], axis=1)
  sf.write(root / "kick" / "b.WAV", stereo, 44101, subtype="PCM_24", format="WAV")
  x = _tone(200, 16000, 0.3)
  sf.write(root / "snare" / "c.flac", np.stack([x, 0.5 * x], axis=1), 16000, subtype="PCM_16")
  quiet = _tone(1000, 16000, 0.1, amp=0.1)
  sf.write(root / "snare" / "sub" / "d.wav", quiet, 16000, subtype="FLOAT")
  sf.write(root / "hat" / "e.wav", _tone(5000, 16000, 0.1), 16000)
  sf.write(root / "loose.wav", _tone(600, 16000, 0.1), 16000)
  (root / "hat" / "notes.txt").write_text("not audio")
  (root / "hat" / "._e.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS junk: ignored
  return root


# ----------------------------------------------------------------------------------------------
# scan_folder / decode


def test_scan_labels_from_folders(tree):
  files = scan_folder(str(tree))
  rel = [(os.path.relpath(f.path, tree), f.label) for f in files]
  assert rel == [
    ("hat/e.wav", "hat"),
    ("kick/a.wav", "kick"),
    ("kick/b.WAV", "kick"),  # upper-case extension
    ("loose.wav", "pack"),  # directly in root: the root's own name
    ("snare/c.flac", "snare"),
    ("snare/sub/d.wav", "snare"),  # nested: first-level folder
  ]
  assert all(isinstance(f, AudioFile) for f in files)


def test_scan_missing_folder(tmp_path):
  with pytest.raises(DataError, match="no such folder"):
    scan_folder(str(tmp_path / "nope"))


def test_scan_survives_symlink_loops(tree):
  os.symlink(tree, tree / "kick" / "loop_to_root")
  os.symlink(tree / "snare", tree / "snare" / "sub" / "loop_up")
  files = scan_folder(str(tree))
  paths = [os.path.realpath(f.path) for f in files]
  assert len(paths) == len(set(paths)) == 6


def test_decode_resamples_and_keeps_pitch(tree):
  x = decode(str(tree / "kick" / "a.wav"), 16000)
  assert x.dtype == np.float32 and x.shape == (8000, 1)  # 0.5 s at 16 kHz
  spectrum = np.abs(np.fft.rfft(x[:, 0]))
  assert abs(np.fft.rfftfreq(8000, 1 / 16000)[spectrum.argmax()] - 440) < 3
  y = decode(str(tree / "kick" / "b.WAV"), 16000)  # odd rate 44101 Hz
  assert abs(y.shape[0] - 0.25 * 16000) <= 1


def test_decode_channel_rules(tree, tmp_path):
  mono = decode(str(tree / "snare" / "c.flac"), 16000)  # L = x, R = x / 2
  x = _tone(200, 16000, 0.3)
  np.testing.assert_allclose(mono[:, 0], 0.75 * x, atol=2e-4)
  dup = decode(str(tree / "hat" / "e.wav"), 16000, channels=2)
  assert dup.shape[1] == 2 and np.array_equal(dup[:, 0], dup[:, 1])
  ramp = np.linspace(-0.5, 0.5, 400, dtype=np.float32)[:, None]  # [T, 1], 25 ms
  quad = ramp * (np.arange(1, 5, dtype=np.float32) / 4)  # [T, 4], distinct channels
  sf.write(tmp_path / "quad.wav", quad, 16000, subtype="FLOAT")
  np.testing.assert_allclose(decode(str(tmp_path / "quad.wav"), 16000, channels=2), quad[:, :2])


def test_decode_errors(tmp_path):
  (tmp_path / "zero_bytes.wav").write_bytes(b"")
  (tmp_path / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(2000))
  sf.write(tmp_path / "no_frames.wav", np.zeros((0, 1), np.float32), 16000)
  bad = _tone(440, 16000, 0.1)
  bad[10] = np.nan
  sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
  for name, reason in [
    ("zero_bytes.wav", "cannot decode"),
    ("garbage.wav", "cannot decode"),
    ("no_frames.wav", "empty"),
    ("nan.wav", "NaN"),
  ]:
    with pytest.raises(AudioDecodeError, match=reason) as info:
      decode(str(tmp_path / name), 16000)
    assert info.value.path == str(tmp_path / name)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# load_clips


def test_load_clips_labels_and_shapes(tree):
  clips = load_clips(str(tree), sample_rate=16000, slice_len=6000)
  assert isinstance(clips, ClipSet)
  assert clips.audio.shape == (6, 6000, 1) and clips.audio.dtype == np.float32
  assert clips.labels.dtype == np.int32
  assert clips.styles == ("hat", "kick", "pack", "snare")
  names = [clips.styles[i] for i in clips.labels]
  assert names == ["hat", "kick", "kick", "pack", "snare", "snare"]  # scan (path) order
  np.testing.assert_allclose(np.max(np.abs(clips.audio), axis=(1, 2)), 0.95, rtol=1e-5)
  # b.WAV is 0.25 s = 4000 samples at 16 kHz: the rest of the 6000-sample window is padding.
  assert np.all(clips.audio[2, 4001:] == 0) and np.any(clips.audio[2, :4000] != 0)
  assert clips.skipped == ()


def test_load_clips_without_normalize_and_stereo(tree):
  clips = load_clips(str(tree), sample_rate=16000, slice_len=512, channels=2, normalize=False)
  assert clips.audio.shape == (6, 512, 2)
  d = clips.audio[5]  # snare/sub/d.wav, peak ~0.1 and mono -> duplicated
  assert 0.05 < np.max(np.abs(d)) < 0.11
  np.testing.assert_array_equal(d[:, 0], d[:, 1])


def test_load_clips_skips_bad_files(tree):
  (tree / "kick" / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(3000))
  (tree / "kick" / "zero.wav").write_bytes(b"")
  bad = _tone(440, 16000, 0.1)
  bad[5] = np.inf
  sf.write(tree / "snare" / "inf.wav", bad, 16000, subtype="FLOAT")
  sf.write(tree / "hat" / "silent.wav", np.zeros(800, np.float32), 16000)
  clips = load_clips(str(tree), sample_rate=16000, slice_len=1024, progress=True)
  assert len(clips) == 6
  reasons = {os.path.basename(p): r for p, r in clips.skipped}
  assert set(reasons) == {"corrupt.wav", "zero.wav", "inf.wav", "silent.wav"}
  assert "NaN or Inf" in reasons["inf.wav"]
  assert "silent" in reasons["silent.wav"]
  assert reasons["corrupt.wav"].startswith("cannot decode (")
  assert "does not exist" not in reasons["corrupt.wav"]  # libsndfile's misleading wording


def test_load_clips_styles_only_from_used_files(tmp_path):
  (tmp_path / "good").mkdir()
  (tmp_path / "broken").mkdir()
  sf.write(tmp_path / "good" / "x.wav", _tone(440, 16000, 0.1), 16000)
  (tmp_path / "broken" / "y.wav").write_bytes(b"junk")
  clips = load_clips(str(tmp_path), sample_rate=16000, slice_len=64)
  assert clips.styles == ("good",) and clips.labels.tolist() == [0]


def test_load_clips_folder_errors(tmp_path):
  with pytest.raises(DataError, match="no such folder"):
    load_clips(str(tmp_path / "missing"), sample_rate=16000, slice_len=64)
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  (tmp_path / "empty" / "sub" / "readme.txt").write_text("hi")
  with pytest.raises(DataError, match=r"empty: no audio files found \(looked for \.wav, \.flac"):
    load_clips(str(tmp_path / "empty"), sample_rate=16000, slice_len=64)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "1.wav").write_bytes(b"x")
  (tmp_path / "bad" / "2.flac").write_bytes(b"")
  expected = r"bad: none of the 2 audio files could be used: e\.g\. .*1\.wav: "
  with pytest.raises(DataError, match=expected):
    load_clips(str(tmp_path / "bad"), sample_rate=16000, slice_len=64)


# ----------------------------------------------------------------------------------------------
# BatchSource


def _indexed(n: int, t: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Clips whose samples all equal their index, so a batch reveals which clips it holds."""
  audio = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, t, 1)).copy()
  return audio, (np.arange(n) % 3).astype(np.int32)


def _ids(audio: np.ndarray) -> np.ndarray:
  """Clip indices of a batch of `_indexed` clips: [..., T, C] -> [...]."""
  return audio[..., 0, 0].astype(np.int64)


def test_batch_shapes_and_labels():
  audio, labels = _indexed(10)
  src = BatchSource(audio, labels, batch_size=4, seed=0, group=3)
  a, l = src.get(0)
  assert a.shape == (3, 4, 4, 1) and a.dtype == np.float32
  assert l.shape == (3, 4) and l.dtype == np.int32
  np.testing.assert_array_equal(l, labels[_ids(a)])  # labels travel with their clips
  np.testing.assert_array_equal(_ids(a), src.step_indices(0))


def test_batch_source_from_clipset():
  audio, labels = _indexed(5)
  clips = ClipSet(audio=audio, labels=labels, styles=("a", "b", "c"))
  a, l = BatchSource(clips, batch_size=2, seed=1).get(3)
  assert a.shape == (1, 2, 4, 1)
  np.testing.assert_array_equal(l, labels[_ids(a)])


def test_batches_are_deterministic_and_seeded():
  audio, labels = _indexed(50)
  first = [BatchSource(audio, labels, batch_size=8, seed=3, group=2).get(s) for s in range(6)]
  again = [BatchSource(audio, labels, batch_size=8, seed=3, group=2).get(s) for s in range(6)]
  other = [BatchSource(audio, labels, batch_size=8, seed=4, group=2).get(s) for s in range(6)]
  for (a, l), (b, m) in zip(first, again):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(l, m)
  assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))


def test_adjacent_seeds_are_not_shifted_epochs():
  audio, labels = _indexed(50)
  s0 = BatchSource(audio, labels, batch_size=8, seed=0)
  s1 = BatchSource(audio, labels, batch_size=8, seed=1)
  assert not np.array_equal(s0.epoch_permutation(1), s1.epoch_permutation(0))


@pytest.mark.parametrize("n,batch_size,group", [(10, 4, 3), (7, 7, 1), (3, 8, 2), (12, 5, 5)])
def test_stream_is_sequence_of_fresh_permutations(n: int, batch_size: int, group: int):
  audio, labels = _indexed(n)
  src = BatchSource(audio, labels, batch_size=batch_size, seed=11, group=group)
  steps = 4 * n // (batch_size * group) + 2  # enough steps to cover >= 4 epochs
  stream = np.concatenate([_ids(src.get(s)[0]).ravel() for s in range(steps)])  # sequential order
  epochs = stream[: (len(stream) // n) * n].reshape(-1, n)  # [E, N]
  assert epochs.shape[0] >= 4
  for e, order in enumerate(epochs):
    np.testing.assert_array_equal(np.sort(order), np.arange(n))  # every clip exactly once
    np.testing.assert_array_equal(order, src.epoch_permutation(e))
  if n >= 7:
    assert len({tuple(o) for o in epochs}) > 1  # reshuffled each epoch, not repeated


def test_resume_matches_uninterrupted_run():
  audio, labels = _indexed(13)
  run = BatchSource(audio, labels, batch_size=4, seed=5, group=5)
  it = run.iterate()
  uninterrupted = [next(it) for _ in range(6)]
  # "Restart" at step 4 with a fresh source, as after loading a checkpoint.
  resumed = BatchSource(audio, labels, batch_size=4, seed=5, group=5).iterate(start_step=4)
  for s in range(4, 6):
    a, l = next(resumed)
    np.testing.assert_array_equal(a, uninterrupted[s][0])
    np.testing.assert_array_equal(l, uninterrupted[s][1])
  # get(s) is exactly stream positions [s*G*B, (s+1)*G*B) of the concatenated epochs, even
  # when asked out of order.
  stream = np.concatenate([run.epoch_permutation(e) for e in range(10)])
  for s in (5, 0, 3):
    block = stream[s * 20 : (s + 1) * 20].reshape(5, 4)
    np.testing.assert_array_equal(_ids(run.get(s)[0]), block)
  np.testing.assert_array_equal(run.stream_indices(7, 70), stream[7:70])


def test_shards_partition_each_batch():
  audio, labels = _indexed(9)
  full = BatchSource(audio, labels, batch_size=6, seed=2, group=2)
  parts = [
    BatchSource(audio, labels, batch_size=6, seed=2, group=2, num_shards=3, shard_index=i)
    for i in range(3)
  ]
  for s in range(4):
    a, l = full.get(s)
    pieces = [p.get(s) for p in parts]
    assert pieces[0][0].shape == (2, 2, 4, 1)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces], axis=1), a)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces], axis=1), l)


def test_batch_source_rejects_bad_arguments():
  audio, labels = _indexed(4)
  with pytest.raises(ValueError):
    BatchSource(audio, labels, batch_size=0)
  with pytest.raises(ValueError):
    BatchSource(audio, labels, batch_size=4, num_shards=3)
  with pytest.raises(ValueError):
    BatchSource(audio, labels[:2], batch_size=2)
  with pytest.raises(ValueError):
    BatchSource(audio[:0], labels[:0], batch_size=2)
  with pytest.raises(ValueError):
    BatchSource(audio, labels, batch_size=2).get(-1)


def test_load_then_batch(tree):
  clips = load_clips(str(tree), sample_rate=16000, slice_len=256)
  a, l = BatchSource(clips, batch_size=4, seed=0, group=2).get(10)
  assert a.shape == (2, 4, 256, 1) and l.shape == (2, 4)
  assert l.max() < clips.num_styles
