"""Labels and attributes from a CSV or JSON manifest instead of folder names."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import DataError, load_clips, read_manifest


@pytest.fixture
def folder(tmp_path):
  sr = 16000
  for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav", "extra.wav"]):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(2000, 0.1 * (i + 1), np.float32), sr, subtype="FLOAT")
  return tmp_path


def test_csv_manifest_labels_and_attributes(folder):
  (folder / "labels.csv").write_text(
    "path,instrument,technique,pitch\n"
    "a.wav,snare,rimshot,0.5\n"
    "b.wav,kick,normal,0.25\n"
    "sub/c.wav,snare,normal,0.75\n"
  )
  m = read_manifest(str(folder / "labels.csv"), str(folder))
  assert m.label_fields == ("instrument", "technique") and m.attribute_names == ("pitch",)
  with pytest.raises(DataError, match="choose one with data.label_field"):
    m.label_field()
  clips = load_clips(
    str(folder),
    sample_rate=16000,
    slice_len=4096,
    manifest=str(folder / "labels.csv"),
    label_field="instrument",
  )
  assert clips.styles == ("kick", "snare")
  by_file = {
    os.path.relpath(s, folder): (clips.styles[l], float(p))
    for s, l, p in zip(clips.sources, clips.labels, clips.attributes["pitch"])
  }
  assert by_file == {"a.wav": ("snare", 0.5), "b.wav": ("kick", 0.25), "sub/c.wav": ("snare", 0.75)}
  assert dict(clips.skipped) == {str(folder / "extra.wav"): "not in the manifest"}
  from data_pipelines import skip_summary

  assert skip_summary(clips) == "3 files used (3 clips), 1 skipped: 1 not in the manifest"
  technique = load_clips(
    str(folder),
    sample_rate=16000,
    slice_len=4096,
    manifest=str(folder / "labels.csv"),
    label_field="technique",
  )
  assert technique.styles == ("normal", "rimshot")
  with pytest.raises(DataError, match="valid: instrument, technique"):
    load_clips(
      str(folder),
      sample_rate=16000,
      slice_len=4096,
      manifest=str(folder / "labels.csv"),
      label_field="colour",
    )


def test_json_manifest_keyed_by_path(folder):
  (folder / "labels.json").write_text(
    json.dumps({"a.wav": "hat", "b.wav": "hat", "extra.wav": "tom"})
  )
  clips = load_clips(
    str(folder), sample_rate=16000, slice_len=4096, manifest=str(folder / "labels.json")
  )
  assert clips.styles == ("hat", "tom") and len(clips) == 3


def test_bad_manifests_are_clear_errors(folder):
  (folder / "nopath.csv").write_text("name,label\na.wav,x\n")
  with pytest.raises(DataError, match="no file column"):
    read_manifest(str(folder / "nopath.csv"), str(folder))
  with pytest.raises(DataError, match="no such manifest"):
    read_manifest(str(folder / "missing.csv"), str(folder))
