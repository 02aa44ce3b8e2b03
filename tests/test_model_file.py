"""Exported model files are covered whole by their checksum (wavegan/export.py).

A tiny generator's parameters are made directly from its shapes (no training, no JAX compute), so
the thousands of damaged copies below load in a few seconds: each is refused by the checksum,
before any model is built.
"""

from __future__ import annotations

import errno
import json
import os

import jax
import numpy as np
import pytest

from wavegan.errors import DiskFullError
from wavegan.files import PART_SUFFIX
from wavegan.models import kinds
from wavegan.presets import preset
from wavegan.synthesis import export
from wavegan.synthesis.export import ModelFileError

STYLES = ("clap", "kick")
DATA_STRIDE = 97


@pytest.fixture(scope="module")
def model():
  cfg = preset("tiny").model
  model_cfg = cfg.__class__(**{**cfg.__dict__, "num_styles": len(STYLES)})
  _, structure = kinds.abstract_generator(model_cfg)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), structure)
  return model_cfg, params


@pytest.fixture
def umask_022():
  old = os.umask(0o022)
  yield
  os.umask(old)


def _save(path, model, **kwargs) -> str:
  model_cfg, params = model
  return export.save_model(
    str(path),
    model_cfg,
    STYLES,
    16000,
    params,
    {"preset": "tiny", "step": 7},
    {"spec_moments": {"mean": [0.5], "std": [2.0]}},
    **kwargs,
  )


@pytest.fixture(scope="module")
def sealed(model, tmp_path_factory) -> bytes:
  return open(_save(tmp_path_factory.mktemp("m") / "m.wgan", model), "rb").read()


def _header_len(data: bytes) -> int:
  return 8 + int.from_bytes(data[:8], "little")


def _refused(path, data: bytes | None = None) -> None:
  if data is not None:
    path.write_bytes(data)
  with pytest.raises(ModelFileError) as info:
    export.load_model(str(path))
  assert "\n" not in str(info.value)


def _each_flip_refused(path, sealed: bytes, positions, bits) -> None:
  """Flips `bits(i)` of byte i of a copy of `sealed`, for each i in turn, in place."""
  path.write_bytes(sealed)
  with open(path, "r+b") as f:
    for i in positions:
      f.seek(i)
      f.write(bytes([sealed[i] ^ bits(i)]))
      f.flush()
      _refused(path)
      f.seek(i)
      f.write(sealed[i : i + 1])
  export.load_model(str(path))  # every byte was put back


def test_round_trip_keeps_arrays_and_metadata(model, tmp_path, umask_022):
  path = _save(tmp_path / "m.wgan", model)
  m = export.load_model(path)
  assert m.model == model[0] and m.styles == STYLES and m.sample_rate == 16000
  assert m.info == {"preset": "tiny", "step": 7}
  assert m.extras == {"spec_moments": {"mean": [0.5], "std": [2.0]}}
  want, got = export.flatten(model[1]), export.flatten(m.params)
  assert set(want) == set(got)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])
  # Ordinary permissions (not a temporary file's 0600), and no temporary left beside it.
  assert os.stat(path).st_mode & 0o777 == 0o644
  assert os.listdir(tmp_path) == ["m.wgan"]


def test_every_header_byte_is_covered(sealed, tmp_path):
  # Length prefix, JSON (metadata and the arrays' names, dtypes, shapes, offsets) and padding;
  # one bit per byte, a different bit each time, so digits stay digits and JSON often stays JSON.
  _each_flip_refused(
    tmp_path / "bad.wgan", sealed, range(_header_len(sealed)), lambda i: 1 << (i % 8)
  )


def test_array_bytes_are_covered(sealed, tmp_path):
  positions = [*range(_header_len(sealed), len(sealed), DATA_STRIDE), len(sealed) - 1]
  _each_flip_refused(tmp_path / "bad.wgan", sealed, positions, lambda i: 0xFF)


def test_truncated_or_extended_files_are_refused(sealed, tmp_path):
  end = _header_len(sealed)
  for size in (0, 5, 8, end // 2, end, end + 100, len(sealed) - 1):
    _refused(tmp_path / "cut.wgan", sealed[:size])
  _refused(tmp_path / "long.wgan", sealed + b"\0")
  with pytest.raises(ModelFileError, match=r"truncated: \d+ of \d+ bytes"):
    export.load_model(str(tmp_path / "cut.wgan"))


def test_foreign_or_unknown_files_are_refused(sealed, tmp_path):
  from safetensors.numpy import save_file

  save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "plain.safetensors"))
  with pytest.raises(ModelFileError, match="not a WaveGAN model file"):
    export.load_model(str(tmp_path / "plain.safetensors"))
  save_file(
    {"w": np.ones(3, np.float32)},
    str(tmp_path / "v9.wgan"),
    metadata={"format": export.FORMAT, "version": "9"},
  )
  with pytest.raises(ModelFileError, match="version 9"):
    export.load_model(str(tmp_path / "v9.wgan"))
  _refused(tmp_path / "junk.wgan", os.urandom(4096))
  with pytest.raises(ModelFileError, match="no such model file"):
    export.load_model(str(tmp_path / "missing.wgan"))


def _version_1(path, model) -> str:
  """A file as version 1 wrote it: the digest covers the arrays only."""
  from safetensors.numpy import save_file

  model_cfg, params = model
  tensors = export.flatten(params)
  save_file(
    tensors,
    str(path),
    metadata={
      "format": export.FORMAT,
      "version": "1",
      "sha256": export.digest(tensors),
      "model": json.dumps(model_cfg.__dict__),
      "styles": json.dumps(list(STYLES)),
      "sample_rate": "16000",
      "info": "{}",
      "extras": "{}",
    },
  )
  return str(path)


def test_version_1_files_still_load_with_their_array_checksum(model, tmp_path):
  path = _version_1(tmp_path / "old.wgan", model)
  m = export.load_model(path)
  assert m.styles == STYLES and m.model == model[0]
  data = bytearray(open(path, "rb").read())
  data[-3] ^= 0x01
  _refused(tmp_path / "old_bad.wgan", bytes(data))


def test_a_failed_verify_or_a_full_disk_leaves_nothing(model, tmp_path, monkeypatch):
  # The seal is written but the bytes on disk do not match it (a bad disk, say).
  real_seal = export._seal

  def seal_then_damage(tmp):
    real_seal(tmp)
    with open(tmp, "r+b") as f:
      f.seek(-1, os.SEEK_END)
      f.write(b"\x7f")

  monkeypatch.setattr(export, "_seal", seal_then_damage)
  with pytest.raises(ModelFileError, match="checksum"):
    _save(tmp_path / "m.wgan", model)
  assert os.listdir(tmp_path) == []

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(export, "_seal", no_space)
  with pytest.raises(DiskFullError):
    _save(tmp_path / "m.wgan", model)
  assert not (tmp_path / "m.wgan").exists() and not (tmp_path / ("m.wgan" + PART_SUFFIX)).exists()
