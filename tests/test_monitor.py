"""TensorBoard events (read back from the files), metrics.jsonl reading, and the curves PNG."""

import errno
import io
import json
import math
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from wavegan.errors import DiskFullError
from wavegan.files import FILE_MODE
from wavegan.synthesis import curves
from wavegan.synthesis.curves import plot_run, read_metrics
from wavegan.training.monitor import TensorBoardLogger

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_records(path):
  """The payloads of a TFRecord file: 8-byte length, 4-byte crc, data, 4-byte crc; crcs checked."""
  from tensorboardX.record_writer import masked_crc32c

  records = []
  with open(path, "rb") as f:
    while header := f.read(8):
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", f.read(4))[0] == masked_crc32c(header)
      data = f.read(length)
      assert struct.unpack("<I", f.read(4))[0] == masked_crc32c(data)
      records.append(data)
  return records


def read_events(run):
  """All events under RUN/tensorboard in file order, with TensorBoard's purge rule applied.

  A SessionLog START at step s (what `purge_step` writes) drops the events already read at steps
  >= s, as TensorBoard's event accumulator does. The `tensorboard` package is not needed.
  """
  from tensorboardX.proto import event_pb2

  logdir = os.path.join(run, "tensorboard")
  events = []
  for name in sorted(os.listdir(logdir)):
    for data in read_records(os.path.join(logdir, name)):
      event = event_pb2.Event.FromString(data)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        events = [e for e in events if e.step < event.step]
      elif event.HasField("summary"):
        events.append(event)
  return events


def summaries(events, kind):
  """{tag: [(step, value)]} for the summary values holding `kind` ("simple_value", "audio", ...)."""
  out = {}
  for event in events:
    for value in event.summary.value:
      if value.WhichOneof("value") == kind:
        out.setdefault(value.tag, []).append((event.step, getattr(value, kind)))
  return out


def test_logger_writes_scalars_audio_and_image(tmp_path):
  run = tmp_path / "run"
  clip = np.stack([np.linspace(-2.0, 2.0, 1600), np.zeros(1600)], axis=-1).astype(np.float32)
  png = tmp_path / "grid.png"
  pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(png)

  with TensorBoardLogger(str(run)) as logger:
    logger.scalars(1, {"d/loss": -1.5, "g/loss": 0.25, "d/wdist": np.float32(2.0)})
    logger.scalars(2, {"d/loss": -0.75, "g/loss": float("nan"), "note": "x", "flag": True})
    logger.audio(2, "preview/kick", clip, sample_rate=16000)
    logger.image(2, "preview/grid", str(png))

  events = read_events(run)
  scalars = summaries(events, "simple_value")
  assert sorted(scalars) == ["d/loss", "d/wdist", "g/loss"]  # the string and the bool are skipped
  assert scalars["d/loss"] == [(1, -1.5), (2, -0.75)]
  assert scalars["d/wdist"] == [(1, 2.0)]
  assert scalars["g/loss"][0] == (1, 0.25) and math.isnan(scalars["g/loss"][1][1])

  [(step, audio)] = summaries(events, "audio")["preview/kick"]
  assert step == 2 and audio.sample_rate == 16000
  assert audio.num_channels == 1 and audio.length_frames == 1600
  decoded, sr = sf.read(io.BytesIO(audio.encoded_audio_string), dtype="float32")
  expected = np.clip(clip.mean(axis=-1), -1.0, 1.0)  # mono mix, then clipped
  assert sr == 16000 and decoded.shape == (1600,)
  np.testing.assert_allclose(decoded, expected, atol=1e-4)

  [(step, image)] = summaries(events, "image")["preview/grid"]
  assert step == 2 and (image.height, image.width, image.colorspace) == (24, 40, 3)
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
  np.testing.assert_array_equal(decoded, pixels)


def test_resume_purges_events_after_start_step(tmp_path):
  run = tmp_path / "run"
  with TensorBoardLogger(str(run)) as logger:
    for step in range(1, 6):
      logger.scalars(step, {"d/loss": float(step)})
  # A killed run resumed from its step-3 checkpoint redoes steps 3 and 4 (new values).
  with TensorBoardLogger(str(run), start_step=3) as logger:
    for step in (3, 4):
      logger.scalars(step, {"d/loss": 10.0 * step})

  # Both event files survive, even when both were opened within the same second.
  assert len(os.listdir(run / "tensorboard")) == 2
  assert summaries(read_events(run), "simple_value")["d/loss"] == [
    (1, 1.0),
    (2, 2.0),
    (3, 30.0),
    (4, 40.0),
  ]


def test_fresh_logger_purges_nothing(tmp_path):
  run = tmp_path / "run"
  with TensorBoardLogger(str(run)) as logger:
    logger.scalars(5, {"d/loss": 5.0})
  with TensorBoardLogger(str(run), start_step=0) as logger:
    logger.scalars(1, {"d/loss": 1.0})
  assert summaries(read_events(run), "simple_value")["d/loss"] == [(5, 5.0), (1, 1.0)]


def test_importing_monitor_does_not_load_tensorboardx_or_matplotlib():
  code = (
    "import sys, wavegan.training.monitor; "
    "print(sorted(m for m in ('tensorboardX', 'matplotlib') if m in sys.modules))"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
  ).stdout
  assert out.strip() == "[]"


def test_read_metrics_skips_blank_and_truncated_lines(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(
    '{"step": 1, "d/loss": -1.0}\n\n[1, 2]\n{"step": 2, "d/loss": -0.5}\n{"step": 3, "d/lo'
  )  # a run killed mid-write
  assert read_metrics(str(path)) == [{"step": 1, "d/loss": -1.0}, {"step": 2, "d/loss": -0.5}]


def write_metrics(run, n_steps=300, eval_every=50):
  """A synthetic metrics.jsonl: noisy training scalars every step, eval-only lines every 50."""
  rng = np.random.default_rng(0)
  lines = []
  for step in range(1, n_steps + 1):
    lines.append(
      {
        "step": step,
        "time": 1.7e9 + step,
        "steps_per_s": 2.0 + rng.random(),
        "d/loss": -1.0 / math.sqrt(step) + 0.1 * rng.normal(),
        "g/loss": 0.5 + 0.1 * rng.normal(),
        "d/grad_norm": 10.0 ** rng.uniform(-1, 2),
        "d/wdist": 1.0 + rng.random(),
      }
    )
    if step % eval_every == 0:
      lines.append(
        {
          "step": step,
          "time": 1.7e9 + step,
          "eval/fd": 40.0 - step / 10,
          "eval/style_acc": step / n_steps,
        }
      )
  os.makedirs(run, exist_ok=True)
  with open(os.path.join(run, "metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 301, "d/l')


def test_panels_group_losses_diagnostics_speed_and_each_eval(tmp_path):
  write_metrics(tmp_path)
  series = curves._series(read_metrics(str(tmp_path / "metrics.jsonl")))
  assert "time" not in series and "step" not in series
  assert len(series["eval/fd"][0]) == 6 and len(series["d/loss"][0]) == 300
  assert curves._panels(series) == [
    ("losses", ["d/loss", "g/loss"], True),
    ("training diagnostics", ["d/grad_norm", "d/wdist"], True),
    ("steps per second", ["steps_per_s"], True),
    ("eval/fd", ["eval/fd"], False),
    ("eval/style_acc", ["eval/style_acc"], False),
  ]


def test_plot_run_writes_a_png_with_a_panel_per_group(tmp_path):
  run = tmp_path / "run"
  write_metrics(run)
  path = plot_run(str(run))
  assert path == str(run / "curves.png")
  assert os.path.getsize(path) > 10_000
  with Image.open(path) as img:
    # Five panels (losses, diagnostics, speed, two evals) on a 2-column grid: 3 rows at 100 dpi.
    assert img.format == "PNG" and img.size == (1200, 960)

  out = tmp_path / "elsewhere" / "c.png"
  assert plot_run(str(run), out=str(out)) == str(out) and out.stat().st_size > 10_000


def test_plot_run_errors_name_the_missing_or_empty_metrics(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
    plot_run(str(tmp_path))
  (tmp_path / "metrics.jsonl").write_text('\n{"step": 1, "d/lo')
  with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + ".*no records"):
    plot_run(str(tmp_path))
  assert not (tmp_path / "curves.png").exists()


def test_plot_run_replaces_the_png_whole_or_not_at_all(tmp_path, monkeypatch):
  import matplotlib.figure

  run = tmp_path / "run"
  write_metrics(run)
  path = plot_run(str(run))
  before = open(path, "rb").read()
  assert os.stat(path).st_mode & 0o777 == FILE_MODE

  def half_then_full(fig, fname, **kwargs):
    with open(fname, "wb") as f:
      f.write(before[:100])
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_full)
  with pytest.raises(DiskFullError, match="no space left"):
    plot_run(str(run))
  assert open(path, "rb").read() == before  # the previous picture is untouched
  assert sorted(os.listdir(run)) == ["curves.png", "metrics.jsonl"]  # no .part left
