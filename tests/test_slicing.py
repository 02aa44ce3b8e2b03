"""Windowing of decoded audio: exact offsets, padding modes, silence handling, and load_clips."""

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import (
  DataError,
  load_clips,
  loud_enough,
  slice_windows,
  trim_leading_silence,
  window_offsets,
)
from wavegan.config import ConfigError, apply_overrides
from wavegan.presets import preset


def test_window_offsets_hop_and_first():
  np.testing.assert_array_equal(window_offsets(10, 4, 3, "zero"), [0, 3, 6, 9])
  np.testing.assert_array_equal(window_offsets(10, 4, 3, "drop"), [0, 3, 6])
  np.testing.assert_array_equal(window_offsets(12, 4, 4, "drop"), [0, 4, 8])
  np.testing.assert_array_equal(window_offsets(10, 4, 3, "zero", mode="first"), [0])
  np.testing.assert_array_equal(window_offsets(3, 4, 3, "drop", mode="first"), [])
  np.testing.assert_array_equal(window_offsets(3, 4, 3, "loop", mode="first"), [0])
  assert window_offsets(0, 4, 3).size == 0
  with pytest.raises(ValueError, match="pad mode"):
    window_offsets(10, 4, 3, "mirror")
  with pytest.raises(ValueError, match="hop"):
    window_offsets(10, 4, 0)


@pytest.mark.parametrize(
  "pad_mode,tail", [("zero", [4, 5, 0, 0]), ("reflect", [4, 5, 4, 3]), ("loop", [4, 5, 1, 2])]
)
def test_slice_windows_padding(pad_mode, tail):
  x = np.arange(1, 6, dtype=np.float32)[:, None]  # [5, 1]
  w = slice_windows(x, np.array([0, 3]), 4, pad_mode)
  assert w.shape == (2, 4, 1) and w.dtype == np.float32
  np.testing.assert_array_equal(w[0, :, 0], [1, 2, 3, 4])
  np.testing.assert_array_equal(w[1, :, 0], tail)


def test_trim_and_loudness():
  x = np.zeros((100, 2), np.float32)
  x[40:, 1] = 0.5
  np.testing.assert_array_equal(trim_leading_silence(x, -60), x[40:])
  assert trim_leading_silence(np.zeros((5, 1), np.float32), -60).shape == (0, 1)
  windows = np.stack([np.zeros((8, 1)), np.full((8, 1), 0.1), np.full((8, 1), 1e-4)])
  np.testing.assert_array_equal(loud_enough(windows, -40), [False, True, False])


def write(path, x, sr):
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, x, sr, subtype="FLOAT")


def test_load_clips_hop_mode_offsets_and_silence(tmp_path):
  sr, n = 16000, 40000
  t = np.arange(n) / sr
  tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  write(tmp_path / "a" / "long.wav", tone, sr)
  half = tone.copy()
  half[20000:] = 0.0  # silent second half
  write(tmp_path / "b" / "half.wav", half, sr)

  clips = load_clips(str(tmp_path), sample_rate=sr, slice_len=16384, mode="hop", hop=8192)
  # long: starts 0, 8192, ..., 32768 (5 windows, the last ones zero-padded); half: the windows
  # starting in the silent part (24576, 32768) are digitally silent and left out.
  assert clips.audio.shape == (5 + 3, 16384, 1)
  np.testing.assert_array_equal(clips.offsets, [0, 8192, 16384, 24576, 32768, 0, 8192, 16384])
  assert clips.sources[0].endswith("long.wav") and clips.sources[-1].endswith("half.wav")
  np.testing.assert_array_equal(clips.labels, [0] * 5 + [1] * 3)
  np.testing.assert_allclose(
    clips.audio[1, :, 0], tone[8192 : 8192 + 16384] * 0.95 / 0.5, atol=1e-4
  )

  dropped = load_clips(
    str(tmp_path),
    sample_rate=sr,
    slice_len=16384,
    mode="hop",
    hop=8192,
    pad_mode="drop",
    silence_db=-12,
  )
  # The full-tone windows have an RMS of -9 dBFS; half.wav's window at 16384 is 22% tone, -15.6 dBFS.
  np.testing.assert_array_equal(dropped.offsets, [0, 8192, 16384, 0, 8192])

  with pytest.raises(DataError, match="none of the 2 audio files"):
    load_clips(str(tmp_path), sample_rate=sr, slice_len=65536, mode="first", pad_mode="drop")


def test_trim_moves_the_onset_window(tmp_path):
  sr = 16000
  x = np.zeros(20000, np.float32)
  x[3000:] = 0.25
  write(tmp_path / "k" / "late.wav", x, sr)
  clips = load_clips(str(tmp_path), sample_rate=sr, slice_len=16384, trim_db=-40)
  assert np.all(clips.audio[0, :, 0] > 0.9)  # starts at the first loud sample


def test_data_config_is_validated():
  with pytest.raises(ConfigError, match="pad_mode"):
    apply_overrides(preset("tiny"), ["data.pad_mode=mirror"]).validate()
  cfg = apply_overrides(preset("tiny"), ["data.slice_mode=hop", "data.slice_hop=4096"]).validate()
  assert cfg.data.slice_hop == 4096


def test_short_and_long_files_are_refused_and_summarised(tmp_path):
  from data_pipelines import AudioDecodeError, decode, skip_summary

  sr = 16000
  write(tmp_path / "k" / "ok.wav", np.full(4000, 0.3, np.float32), sr)
  write(tmp_path / "k" / "blip.wav", np.full(100, 0.3, np.float32), sr)  # 6.25 ms
  (tmp_path / "k" / "broken.wav").write_bytes(b"RIFF not really a wav file")
  with pytest.raises(AudioDecodeError, match="shorter than 10 ms"):
    decode(str(tmp_path / "k" / "blip.wav"), sr)
  with pytest.raises(AudioDecodeError, match="longer than 0.1 s"):
    decode(str(tmp_path / "k" / "ok.wav"), sr, max_seconds=0.1)
  clips = load_clips(str(tmp_path), sample_rate=sr, slice_len=16384)
  assert len(clips) == 1
  assert skip_summary(clips) == "1 files used (1 clips), 2 skipped: 1 too short, 1 unreadable"
