"""Format matrix for audio decoding: codecs, bit depths, rates, channels, normalisation, bad files.

Every file is written with soundfile (libsndfile) into `tmp_path`, so the tests need no fixtures on
disk; signals are short (0.25-1 s) to keep the whole file fast.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from data_pipelines import (
  AudioDecodeError,
  SliceOptions,
  containers,
  decode,
  process_file,
  scan_folder,
)


def _tone(freq: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
  """Steady sine, float32 [T]."""
  t = np.arange(round(sample_rate * seconds)) / sample_rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _chirp(f0: float, f1: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
  """Linear sweep from f0 to f1 Hz, float32 [T]; matches itself at one lag only, unlike a tone."""
  t = np.arange(round(sample_rate * seconds)) / sample_rate
  phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
  return (amp * np.sin(phase)).astype(np.float32)


def _stereo(sample_rate: int, seconds: float) -> np.ndarray:
  """Two clearly different channels, float32 [T, 2]: L is a 440 Hz sine, R seeded noise.

  Both stay within [-0.5, 0.5], so every integer format holds them without clipping.
  """
  left = _tone(440, sample_rate, seconds)
  rng = np.random.default_rng(sample_rate)
  right = rng.uniform(-0.4, 0.4, left.shape[0]).astype(np.float32)
  return np.stack([left, right], axis=1)


def _rms_db(x: np.ndarray) -> float:
  """RMS level of x in dB."""
  return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


def _xcorr_peak(y: np.ndarray, x: np.ndarray, max_lag: int) -> tuple[float, int]:
  """Peak normalised cross-correlation of y [T_y] against x [T_x] over lags |lag| <= max_lag.

  Returns:
    (peak correlation in [-1, 1], lag in samples at which y best matches x; positive = y late).
  """
  n = y.shape[0] + x.shape[0]
  c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)  # circular, zero-padded
  lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
  values = c[lags]
  best = int(np.argmax(values))
  norm = np.sqrt(np.sum(np.square(x, dtype=np.float64)) * np.sum(np.square(y, dtype=np.float64)))
  return float(values[best] / norm), int(lags[best])


def _loudness(x: np.ndarray, sample_rate: int) -> float:
  """BS.1770 integrated loudness of x [T, C] with blocks shrunk to fit short clips."""
  block = min(0.4, x.shape[0] / sample_rate)
  return pyloudnorm.Meter(sample_rate, block_size=block).integrated_loudness(x.astype(np.float64))


# ----------------------------------------------------------------------------------------------
# Lossless formats: exact up to the format's quantisation step


LOSSLESS = [
  # (format, subtype, extension, tolerance)
  ("WAV", "PCM_U8", "wav", 1 / 128),
  ("WAV", "PCM_16", "wav", 2 / 2**15),
  ("WAV", "PCM_24", "wav", 2 / 2**23),
  ("WAV", "PCM_32", "wav", 2**-24),  # float32 output resolution, not the 32-bit step, limits it
  ("WAV", "FLOAT", "wav", 0.0),
  ("WAV", "DOUBLE", "wav", 0.0),  # float32 samples survive the float64 round trip exactly
  ("FLAC", "PCM_16", "flac", 2 / 2**15),
  ("FLAC", "PCM_24", "flac", 2 / 2**23),
  ("AIFF", "PCM_16", "aiff", 2 / 2**15),
  ("AIFF", "PCM_24", "aiff", 2 / 2**23),
]


@pytest.mark.parametrize(
  "fmt,subtype,ext,tol", LOSSLESS, ids=[f"{f}-{s}" for f, s, _, _ in LOSSLESS]
)
def test_lossless_decode_matches_written_signal(tmp_path, fmt, subtype, ext, tol):
  sr = 22050
  x = _stereo(sr, 0.25)  # [T, 2]
  path = str(tmp_path / f"clip.{ext}")
  sf.write(path, x, sr, format=fmt, subtype=subtype)
  info = sf.info(path)
  assert (info.format, info.subtype, info.channels) == (fmt, subtype, 2)  # really that format
  y = decode(path, sr, channels=2)
  assert y.dtype == np.float32 and y.flags.c_contiguous
  assert y.shape == x.shape
  # A wrong bit depth, sign convention (U8) or channel order would be off by far more than tol.
  err = np.abs(y.astype(np.float64) - x)
  assert err.max() <= tol, f"max error {err.max():.3g} > {tol:.3g}"


# ----------------------------------------------------------------------------------------------
# Lossy formats: same rate, about the same length, recognisably the same sound


LOSSY = [
  # (format, subtype, extension, sample rate)
  ("OGG", "VORBIS", "ogg", 44100),
  ("OGG", "OPUS", "opus", 48000),
  ("MP3", "MPEG_LAYER_III", "mp3", 44100),
]


@pytest.mark.parametrize("fmt,subtype,ext,sr", LOSSY, ids=[s for _, s, _, _ in LOSSY])
def test_lossy_decode_is_recognisably_the_same(tmp_path, fmt, subtype, ext, sr):
  seconds = 0.5
  # Two tonal sweeps (lossy codecs keep tones far better than noise) in opposite directions.
  x = np.stack(
    [_chirp(200, 2000, sr, seconds), _chirp(3000, 600, sr, seconds, amp=0.3)], axis=1
  )  # [T, 2]
  path = str(tmp_path / f"clip.{ext}")
  sf.write(path, x, sr, format=fmt, subtype=subtype)
  info = sf.info(path)
  assert (info.format, info.subtype, info.samplerate) == (fmt, subtype, sr)
  y = decode(path, sr, channels=2)
  assert y.dtype == np.float32 and y.shape[1] == 2
  assert abs(y.shape[0] - x.shape[0]) <= 0.1 * sr  # codec padding / priming
  max_lag = int(0.1 * sr)  # encoder delay
  for ch in range(2):
    assert abs(_rms_db(y[:, ch]) - _rms_db(x[:, ch])) < 2.0
    peak, _ = _xcorr_peak(y[:, ch], x[:, ch], max_lag)
    assert peak > 0.9, f"channel {ch}: correlation {peak:.3f}"
    swapped, _ = _xcorr_peak(y[:, ch], x[:, 1 - ch], max_lag)
    assert swapped < 0.2, f"channel {ch} looks like channel {1 - ch} ({swapped:.3f})"


def test_lossy_decode_mono_mixdown_and_resample(tmp_path):
  x = _chirp(200, 2000, 48000, 0.5)
  path = str(tmp_path / "clip.opus")
  sf.write(path, np.stack([x, x], axis=1), 48000, format="OGG", subtype="OPUS")
  y = decode(path, 16000)  # [T, 1]
  assert y.shape[1] == 1 and abs(y.shape[0] - 8000) <= 0.1 * 16000
  ref = _chirp(200, 2000, 16000, 0.5)
  assert abs(_rms_db(y[:, 0]) - _rms_db(ref)) < 2.0
  assert _xcorr_peak(y[:, 0], ref, 1600)[0] > 0.9


# ----------------------------------------------------------------------------------------------
# Upper-case extensions


def test_scan_finds_upper_case_extensions(tmp_path):
  root = tmp_path / "pack"
  (root / "loud").mkdir(parents=True)
  x = _tone(440, 16000, 0.25)
  written = {
    "X.WAV": ("WAV", "PCM_16", 16000),
    "Y.FLAC": ("FLAC", "PCM_16", 16000),
    "Z.OGG": ("OGG", "VORBIS", 16000),
    "V.OPUS": ("OGG", "OPUS", 48000),
    "U.MP3": ("MP3", "MPEG_LAYER_III", 16000),
    "T.AIFF": ("AIFF", "PCM_16", 16000),
    "S.Aif": ("AIFF", "PCM_24", 16000),
  }
  for name, (fmt, subtype, sr) in written.items():
    sig = x if sr == 16000 else _tone(440, sr, 0.25)
    sf.write(str(root / "loud" / name), sig, sr, format=fmt, subtype=subtype)
  (root / "loud" / "README.TXT").write_text("not audio")
  files = scan_folder(str(root))
  assert sorted(os.path.basename(f.path) for f in files) == sorted(written)
  assert {f.label for f in files} == {"loud"}
  for f in files:
    y = decode(f.path, 16000)
    assert y.shape[1] == 1 and abs(y.shape[0] - 4000) <= 0.1 * 16000, f.path


# ----------------------------------------------------------------------------------------------
# Sample rates


@pytest.mark.parametrize("file_rate", [8000, 22050, 44100, 44101, 48000, 96000])
def test_resample_length_and_pitch(tmp_path, file_rate):
  freq, seconds, out_rate = 1250.0, 0.3, 16000
  x = _tone(freq, file_rate, seconds)
  n = x.shape[0]
  path = str(tmp_path / f"r{file_rate}.wav")
  sf.write(path, x, file_rate, subtype="FLOAT")
  y = decode(path, out_rate)[:, 0]
  assert abs(y.shape[0] - round(n * out_rate / file_rate)) <= 1
  spectrum = np.abs(np.fft.rfft(y * np.hanning(y.shape[0])))
  bin_hz = out_rate / y.shape[0]
  assert abs(np.fft.rfftfreq(y.shape[0], 1 / out_rate)[spectrum.argmax()] - freq) <= bin_hz
  # The resampler keeps the level (ends excluded: filter edge effects).
  mid = y[y.shape[0] // 4 : 3 * y.shape[0] // 4]
  assert abs(_rms_db(mid) - _rms_db(x)) < 0.1


# ----------------------------------------------------------------------------------------------
# Channels


def test_stereo_to_mono_is_channel_mean(tmp_path):
  x = _stereo(16000, 0.25)  # L and R differ
  path = str(tmp_path / "st.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  y = decode(path, 16000, channels=1)
  assert y.shape == (x.shape[0], 1)
  expected = (x[:, 0].astype(np.float64) + x[:, 1]) / 2
  np.testing.assert_allclose(y[:, 0], expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
  "fmt,subtype,ext,tol", [("WAV", "FLOAT", "wav", 0.0), ("FLAC", "PCM_24", "flac", 2 / 2**23)]
)
def test_stereo_keeps_left_right_order(tmp_path, fmt, subtype, ext, tol):
  x = _stereo(16000, 0.25)
  path = str(tmp_path / f"st.{ext}")
  sf.write(path, x, 16000, format=fmt, subtype=subtype)
  y = decode(path, 16000, channels=2)
  assert y.shape == x.shape
  np.testing.assert_allclose(y[:, 0], x[:, 0], rtol=0, atol=tol)
  np.testing.assert_allclose(y[:, 1], x[:, 1], rtol=0, atol=tol)


def test_six_channels_keep_first_two(tmp_path):
  rng = np.random.default_rng(6)
  x = rng.uniform(-0.5, 0.5, (4000, 6)).astype(np.float32)  # 6 distinct channels
  path = str(tmp_path / "surround.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  assert sf.info(path).channels == 6
  np.testing.assert_array_equal(decode(path, 16000, channels=2), x[:, :2])
  np.testing.assert_allclose(
    decode(path, 16000, channels=1)[:, 0], x.astype(np.float64).mean(axis=1), rtol=0, atol=1e-7
  )


def test_mono_to_stereo_duplicates(tmp_path):
  x = _tone(440, 16000, 0.25)
  path = str(tmp_path / "mono.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  y = decode(path, 16000, channels=2)
  assert y.shape == (x.shape[0], 2)
  np.testing.assert_array_equal(y[:, 0], x)
  np.testing.assert_array_equal(y[:, 1], x)


def test_more_channels_than_stereo_is_refused(tmp_path):
  path = str(tmp_path / "st.wav")
  sf.write(path, _stereo(16000, 0.25), 16000, subtype="FLOAT")
  with pytest.raises(AudioDecodeError) as info:
    decode(path, 16000, channels=3)
  assert "channels" in info.value.reason
  assert "3" in info.value.reason and "2-channel" in info.value.reason
  assert info.value.path == path


# ----------------------------------------------------------------------------------------------
# Normalisation in process_file


def _noise_file(
  tmp_path, std: float, sr: int = 16000, seconds: float = 1.0
) -> tuple[str, np.ndarray]:
  """A seeded Gaussian noise burst written as float WAV: returns (path, samples float32 [T])."""
  x = (std * np.random.default_rng(7).standard_normal(int(sr * seconds))).astype(np.float32)
  path = str(tmp_path / f"noise_{std:g}.wav")
  sf.write(path, x, sr, subtype="FLOAT")
  return path, x


@pytest.mark.parametrize("std", [0.01, 0.2])
def test_peak_normalize(tmp_path, std):
  path, _ = _noise_file(tmp_path, std)
  windows, starts, length = process_file(path, SliceOptions(slice_len=16000, normalize="peak"))
  assert windows.shape == (1, 16000, 1) and starts.tolist() == [0] and length == 16000
  assert abs(float(np.max(np.abs(windows))) - 0.95) <= 1e-6


@pytest.mark.parametrize(
  "std,seconds,slice_len",
  [
    (0.1, 1.0, 16000),  # turned down
    (0.02, 1.0, 16000),  # turned up
    (0.1, 1.0, 16384),  # window 384 samples longer than the file: zero padding at the end
    (0.1, 0.25, 4000),  # shorter than one 400 ms BS.1770 block
  ],
)
def test_loudness_normalize_reaches_target(tmp_path, std, seconds, slice_len):
  path, x = _noise_file(tmp_path, std, seconds=seconds)
  assert abs(_loudness(x[:, None], 16000) + 20.0) > 2.0  # the input is not already at target
  opts = SliceOptions(slice_len=slice_len, normalize="loudness", loudness_lufs=-20.0)
  windows, _, length = process_file(path, opts)
  assert length == x.shape[0]
  w = windows[0]  # [slice_len, 1]
  assert abs(_loudness(w, 16000) - (-20.0)) < 0.5
  assert float(np.max(np.abs(w))) <= 0.99


def test_loudness_normalize_limits_peak(tmp_path):
  # Quiet noise with one loud click: reaching -20 LUFS would need ~+15 dB and push the click
  # far past full scale, so the gain stops at a 0.99 peak instead.
  x = (0.01 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32)
  x[5000] = 0.9
  path = str(tmp_path / "click.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  opts = SliceOptions(slice_len=16000, normalize="loudness", loudness_lufs=-20.0)
  windows, _, _ = process_file(path, opts)
  peak = float(np.max(np.abs(windows)))
  assert peak <= 0.99 + 1e-6
  assert peak >= 0.99 - 1e-6  # limited at 0.99, not left quieter
  assert _loudness(windows[0], 16000) < -20.0 - 0.5  # so the target is not reached
  np.testing.assert_allclose(windows[0, :, 0], x * (0.99 / 0.9), rtol=1e-6, atol=1e-8)


def test_loudness_normalize_any_short_length(tmp_path):
  x = (0.1 * np.random.default_rng(7).standard_normal(2007)).astype(np.float32)  # 125 ms
  assert x.shape[0] < (x.shape[0] / 16000) * 16000  # the float rounding that trips pyloudnorm
  path = str(tmp_path / "n2007.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  opts = SliceOptions(slice_len=2048, normalize="loudness", loudness_lufs=-20.0)
  windows, _, _ = process_file(path, opts)
  assert abs(_loudness(windows[0], 16000) - (-20.0)) < 0.5  # 41 padding zeros: -0.09 LU


def test_loudness_normalize_six_channels(tmp_path):
  x = (0.1 * np.random.default_rng(6).standard_normal((16000, 6))).astype(np.float32)
  path = str(tmp_path / "surround.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  opts = SliceOptions(slice_len=16000, channels=6, normalize="loudness", loudness_lufs=-20.0)
  windows, _, _ = process_file(path, opts)  # measured on the mixdown
  assert windows.shape == (1, 16000, 6) and float(np.max(np.abs(windows))) <= 0.99
  assert abs(_loudness(windows[0].mean(axis=1, keepdims=True), 16000) - (-20.0)) < 0.5


def test_normalize_none_keeps_level(tmp_path):
  path, x = _noise_file(tmp_path, 0.05)
  windows, _, _ = process_file(path, SliceOptions(slice_len=16000, normalize="none"))
  np.testing.assert_array_equal(windows[0, :, 0], x)


# ----------------------------------------------------------------------------------------------
# Bad files


def _pcm16_wav_bytes(tmp_path, seconds: float = 0.5, sr: int = 16000) -> bytes:
  """The bytes of a mono PCM_16 WAV holding a 440 Hz tone (44-byte canonical header)."""
  path = tmp_path / "source.wav"
  sf.write(str(path), _tone(440, sr, seconds), sr, subtype="PCM_16")
  return path.read_bytes()


def _zero_bytes(ext: str):
  def make(tmp_path):
    path = tmp_path / f"zero.{ext}"
    path.write_bytes(b"")
    return path

  return make


def _no_frames(tmp_path):
  path = tmp_path / "no_frames.wav"
  sf.write(str(path), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
  return path


def _text(ext: str):
  def make(tmp_path):
    path = tmp_path / f"notes.{ext}"
    path.write_text("These are my notes, not audio.\n" * 20)
    return path

  return make


def _header_cut_at(n: int):
  def make(tmp_path):
    data = _pcm16_wav_bytes(tmp_path)
    assert data.find(b"data") == 36  # canonical header: 44 bytes
    path = tmp_path / f"cut{n}.wav"
    path.write_bytes(data[:n])
    return path

  return make


def _non_finite(value: float):
  def make(tmp_path):
    x = _tone(440, 16000, 0.25)
    x[1000] = value
    path = tmp_path / "nonfinite.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    return path

  return make


def _short(tmp_path):
  path = tmp_path / "short.wav"
  sf.write(str(path), _tone(440, 16000, 0.009), 16000, subtype="PCM_16")  # 144 samples < 160
  return path


def _long(tmp_path):
  path = tmp_path / "long.wav"
  sf.write(str(path), _tone(440, 8000, 2.0), 8000, subtype="PCM_16")
  return path


BAD_FILES = [
  # (id, builder, decode kwargs, regex the reason must match)
  ("zero-bytes-wav", _zero_bytes("wav"), {}, r"^cannot decode \(Format not recognised"),
  ("zero-bytes-flac", _zero_bytes("flac"), {}, r"^cannot decode \(Format not recognised"),
  # libsndfile's MP3 probe says "does not exist" here, which decode rewords.
  ("zero-bytes-mp3", _zero_bytes("mp3"), {}, r"^cannot decode \(corrupt or not a supported"),
  ("no-frames", _no_frames, {}, r"^empty \(0 samples\)$"),
  ("text-as-wav", _text("wav"), {}, r"^cannot decode \(Format not recognised"),
  ("text-as-ogg", _text("ogg"), {}, r"^cannot decode \(Format not recognised"),
  ("text-as-mp3", _text("mp3"), {}, r"^cannot decode \(corrupt or not a supported"),
  # Too short to tell a WAV header from anything else: the decoder's verdict.
  ("header-cut-8", _header_cut_at(8), {}, r"^cannot decode \(Format not recognised"),
  # A RIFF header that stops mid-chunk is a cut file (libsndfile: "Malformed 'fmt ' chunk",
  # "No 'data' chunk"), counted with the other truncated files.
  (
    "header-cut-20",
    _header_cut_at(20),
    {},
    r"^truncated: file ends inside its header, at 20 of 16044 bytes$",
  ),
  ("header-cut-22", _header_cut_at(22), {}, r"^truncated: file ends inside its header, at 22"),
  ("header-cut-40", _header_cut_at(40), {}, r"^truncated: file ends inside its header, at 40"),
  ("nan", _non_finite(np.nan), {}, r"^contains NaN"),
  ("inf", _non_finite(-np.inf), {}, r"^contains NaN or Inf"),
  ("too-short", _short, {}, r"^shorter than 10 ms \(144 samples\)$"),
  ("too-long", _long, {"max_seconds": 1.0}, r"^longer than 1 s \(2 s\)$"),
]


@pytest.mark.parametrize(
  "builder,kwargs,pattern", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_bad_file_is_refused(tmp_path, builder, kwargs, pattern):
  path = str(builder(tmp_path))
  with pytest.raises(AudioDecodeError) as info:
    decode(path, 16000, **kwargs)
  err = info.value
  assert err.path == path
  assert err.reason and "\n" not in str(err)
  assert path not in err.reason  # the path is in the message once, not repeated in the reason
  assert "does not exist" not in err.reason
  assert re.search(pattern, err.reason), err.reason


def test_long_file_within_limit_decodes(tmp_path):
  path = str(_long(tmp_path))
  assert decode(path, 8000, max_seconds=2.0).shape == (16000, 1)  # exactly at the limit: allowed


def test_file_of_exactly_min_length_decodes(tmp_path):
  path = tmp_path / "ten_ms.wav"
  sf.write(str(path), _tone(440, 16000, 0.01), 16000, subtype="PCM_16")  # 160 samples
  assert decode(str(path), 16000).shape == (160, 1)


# ----------------------------------------------------------------------------------------------
# Truncated files: skipped, never decoded as far as they go.
#
# libsndfile 1.2.2 does not report them: a WAV or AIFF cut inside its data gets its frame count
# clamped to the bytes present and decodes without error, an Ogg decodes the pages present (or
# none), an MP3 decodes fewer frames than its Xing header declares, and only FLAC fails ("lost
# sync"). decode checks the container itself, so every cut file is refused as "truncated: ...".


def _cut_file(
  tmp_path, x: np.ndarray, sr: int, fmt: str, subtype: str, ext: str, keep: float = 0.5
) -> tuple[str, bytes]:
  """Writes x whole, then the first `keep` of its bytes as cut.EXT; returns (path, whole bytes)."""
  full = tmp_path / f"full.{ext}"
  sf.write(str(full), x, sr, format=fmt, subtype=subtype)
  data = full.read_bytes()
  cut = tmp_path / f"cut.{ext}"
  cut.write_bytes(data[: int(len(data) * keep)])
  return str(cut), data


@pytest.mark.parametrize(
  "fmt,subtype,ext,frame_bytes",
  [
    ("WAV", "PCM_16", "wav", 2),
    ("WAV", "PCM_24", "wav", 3),
    ("WAV", "FLOAT", "wav", 4),
    ("WAVEX", "PCM_16", "wav", 2),
    ("RF64", "PCM_16", "wav", 2),
    ("AIFF", "PCM_16", "aiff", 2),
    ("AIFF", "PCM_24", "aif", 3),
  ],
)
def test_pcm_truncated_in_data_is_refused_with_frame_counts(
  tmp_path, fmt, subtype, ext, frame_bytes
):
  x = _tone(440, 16000, 0.5)
  path, data = _cut_file(tmp_path, x, 16000, fmt, subtype, ext)
  # What libsndfile does unaided: the count clamped to the bytes present, no error.
  present = sf.info(path).frames
  assert 0 < present < x.shape[0] and sf.read(path)[0].shape[0] == present
  with pytest.raises(AudioDecodeError) as info:
    decode(path, 16000)
  assert info.value.reason == f"truncated: header says {x.shape[0]} frames, file holds {present}"
  assert present == (len(data) // 2 - (len(data) - x.shape[0] * frame_bytes)) // frame_bytes


def test_wav_missing_one_byte_is_truncated(tmp_path):
  # The smallest cut: the last frame loses its last byte.
  path, _ = _cut_file(tmp_path, _tone(440, 16000, 0.25), 16000, "WAV", "PCM_16", "wav", keep=1.0)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 1)
  with pytest.raises(AudioDecodeError, match=r"header says 4000 frames, file holds 3999$"):
    decode(path, 16000)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_flac_truncated_in_data_is_refused_with_frame_counts(tmp_path, subtype):
  # libsndfile announces STREAMINFO's count, then fails mid-read ("lost sync"); the frame headers
  # left in the file say how much of it is whole (4096-frame blocks here).
  path, _ = _cut_file(tmp_path, _tone(440, 16000, 2.0), 16000, "FLAC", subtype, "flac")
  assert sf.info(path).frames == 32000
  with pytest.raises(sf.LibsndfileError, match="lost sync"):
    sf.read(path)
  with pytest.raises(AudioDecodeError) as info:
    decode(path, 16000)
  assert re.fullmatch(r"truncated: header says 32000 frames, file holds \d+", info.value.reason)
  held = int(info.value.reason.rsplit(" ", 1)[1])
  assert held % 4096 == 0 and 0 < held < 32000


def test_flac_corrupt_in_the_middle_is_not_called_truncated(tmp_path):
  path = tmp_path / "full.flac"
  sf.write(str(path), _tone(440, 16000, 2.0), 16000, subtype="PCM_16")
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle : middle + 200] = bytes(b ^ 0x5A for b in data[middle : middle + 200])
  path.write_bytes(bytes(data))
  with pytest.raises(AudioDecodeError, match=r"cannot decode \(.*lost sync"):
    decode(str(path), 16000)


@pytest.mark.parametrize("subtype,ext,sr", [("VORBIS", "ogg", 16000), ("OPUS", "opus", 48000)])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_ogg_truncated_is_refused(tmp_path, subtype, ext, sr, keep):
  # Depending on the cut, libsndfile decodes the pages present, none, or calls it malformed.
  path, _ = _cut_file(tmp_path, _tone(440, sr, 2.0), sr, "OGG", subtype, ext, keep=keep)
  with pytest.raises(AudioDecodeError, match=r"^.*: truncated: file ends inside Ogg page \d+ "):
    decode(path, sr)


def test_ogg_cut_at_a_page_boundary_is_refused(tmp_path):
  full = tmp_path / "full.ogg"
  sf.write(str(full), _tone(440, 16000, 10.0), 16000, format="OGG", subtype="VORBIS")
  data = full.read_bytes()
  last_page = data.rfind(b"OggS")
  (tmp_path / "cut.ogg").write_bytes(data[:last_page])
  frames = sf.info(str(tmp_path / "cut.ogg")).frames  # libsndfile: a shorter file, no complaint
  assert 0 < frames < 160000
  with pytest.raises(AudioDecodeError, match=r"truncated: .*without its end-of-stream page"):
    decode(str(tmp_path / "cut.ogg"), 16000)


def test_mp3_truncated_is_refused(tmp_path):
  # Its Xing header declares the frame count; libsndfile decodes fewer without error.
  path, _ = _cut_file(
    tmp_path, _tone(440, 16000, 1.0), 16000, "MP3", "MPEG_LAYER_III", "mp3", keep=0.9
  )
  with pytest.raises(AudioDecodeError, match=r"header says 16000 frames, file holds \d+"):
    decode(path, 16000)


@pytest.mark.parametrize(
  "fmt,subtype,ext,sr",
  [
    ("WAV", "PCM_16", "wav", 16000),
    ("AIFF", "PCM_24", "aiff", 16000),
    ("FLAC", "PCM_16", "flac", 16000),
    ("OGG", "VORBIS", "ogg", 16000),
    ("OGG", "OPUS", "opus", 48000),
    ("MP3", "MPEG_LAYER_III", "mp3", 16000),
  ],
)
def test_whole_files_are_not_called_truncated(tmp_path, fmt, subtype, ext, sr):
  path = tmp_path / f"whole.{ext}"
  sf.write(str(path), _tone(440, sr, 1.0), sr, format=fmt, subtype=subtype)
  assert containers.truncation(str(path)) == ""
  assert decode(str(path), sr).shape[0] == sf.info(str(path)).frames


def test_wav_with_an_unfinished_header_size_is_not_judged(tmp_path):
  # A streaming writer that never filled in the data size (0 or 0xFFFFFFFF) declares nothing.
  path = tmp_path / "stream.wav"
  sf.write(str(path), _tone(440, 16000, 0.25), 16000, subtype="PCM_16")
  data = bytearray(path.read_bytes())
  data[40:44] = b"\xff\xff\xff\xff"
  path.write_bytes(bytes(data))
  assert containers.truncation(str(path)) == ""
