"""Input pipeline speed: preparing a messy corpus, and the loader against the train step's needs.

    python benchmarks/bench_data.py                      # 1 h corpus, paper-size train step timed
    python benchmarks/bench_data.py --hours 0.2 --train-step-s 21.3   # quicker, step time given

Steps, each printed as a JSON line with a "record" key:
  corpus    generates (once; reused from --corpus-dir) at least --hours of audio in mixed formats
            (WAV 16/24-bit and float, FLAC, OGG/Vorbis, Opus, MP3, AIFF), rates (16000, 22050,
            44100, 44101, 48000 Hz) and channel counts (mono, stereo), plus a few broken files
  prepare   `data_pipelines.prepare` of the whole corpus from scratch in "hop" mode (every
            second of audio decoded, resampled and sliced), with --workers processes:
            seconds of audio per second of wall time (goal: >= 500x real time on 2 cores)
  loader    the training loader (grain, thread prefetch) reading batches of 64 x 16384 from the
            cache: batches/s
  train     the paper-size train step (d=64, batch 64, 5 D + 1 G updates) timed once after
            compilation, or --train-step-s; it consumes 5 batches per step
  librosa   the plain approach, `librosa.load(path, sr=16000)` per file, on a sample of files,
            as audio seconds per second (what every epoch costs without a cache)
  summary   the ratios: loader vs train consumption (goal >= 20x), prepare vs librosa, and the
            loader vs librosa per epoch
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# (format, subtype, extension, rate, channels): a rotation that mixes everything.
KINDS = (
  ("WAV", "PCM_16", "wav", 44100, 2),
  ("WAV", "PCM_24", "WAV", 48000, 1),
  ("WAV", "FLOAT", "wav", 16000, 1),
  ("FLAC", "PCM_16", "flac", 44101, 2),
  ("FLAC", "PCM_24", "flac", 22050, 1),
  ("OGG", "VORBIS", "ogg", 44100, 2),
  ("MP3", "MPEG_LAYER_III", "mp3", 44100, 2),
  ("AIFF", "PCM_16", "aiff", 22050, 1),
  ("OGG", "OPUS", "opus", 48000, 1),
  ("WAV", "PCM_16", "wav", 16000, 1),
)

BROKEN = ("corrupt.wav", "empty.flac", "notes.mp3")  # skipped by prepare, named in its report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--hours", type=float, default=1.0, help="audio in the generated corpus")
  p.add_argument("--seconds-per-file", type=float, default=6.0)
  p.add_argument(
    "--corpus-dir",
    default=os.path.join(tempfile.gettempdir(), "wavegan-bench-corpus"),
    help="where the corpus is generated (reused when it is already there)",
  )
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare processes")
  p.add_argument("--loader-batches", type=int, default=200, help="batches read from the cache")
  p.add_argument("--librosa-files", type=int, default=40, help="files loaded with librosa")
  p.add_argument("--train-step-s", type=float, help="paper train step seconds (default: measure)")
  return p.parse_args(argv)


def _signal(rng: np.random.Generator, n: int, rate: int, channels: int) -> np.ndarray:
  """Decaying hits over pink-ish noise and tones: float32 [n, channels] in [-1, 1]."""
  t = np.arange(n) / rate
  x = np.zeros(n)
  for onset in np.sort(rng.uniform(0, t[-1], size=int(t[-1] * 2) + 1)):
    k = t >= onset
    x[k] += (
      rng.uniform(0.1, 0.5)
      * np.sin(2 * np.pi * rng.uniform(50, 2000) * (t[k] - onset))
      * np.exp(-(t[k] - onset) / rng.uniform(0.05, 0.5))
    )
  x += 0.01 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n)
  x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)
  return (0.9 * x / np.max(np.abs(x))).astype(np.float32)


def make_corpus(folder: str, hours: float, seconds: float) -> dict[str, float]:
  """Writes the mixed-format corpus (3 style folders) unless it is already there."""
  n_files = int(np.ceil(hours * 3600 / seconds))
  stamp = os.path.join(folder, f".complete-{n_files}-{seconds:g}")
  t0 = time.perf_counter()
  if not os.path.exists(stamp):
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n_files):
      fmt, subtype, ext, rate, channels = KINDS[i % len(KINDS)]
      style = ("loops", "hits", "textures")[i % 3]
      os.makedirs(os.path.join(folder, style), exist_ok=True)
      x = _signal(rng, int(seconds * rate), rate, channels)
      sf.write(os.path.join(folder, style, f"{i:05d}.{ext}"), x, rate, format=fmt, subtype=subtype)
    Path(folder, "hits", BROKEN[0]).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    Path(folder, "hits", BROKEN[1]).write_bytes(b"")
    Path(folder, "hits", BROKEN[2]).write_text("not audio")
    Path(stamp).touch()
  total = sum(
    sf.info(os.path.join(d, f)).duration
    for d, _, fs in os.walk(folder)
    for f in fs
    if not f.startswith(".") and f not in BROKEN
  )
  return {
    "files": n_files,
    "audio_s": round(total, 1),
    "generate_s": round(time.perf_counter() - t0, 1),
  }


def bench_prepare(folder: str, cache: str, workers: int) -> dict[str, float]:
  from data_pipelines import SliceOptions, prepare

  shutil.rmtree(cache, ignore_errors=True)
  opts = SliceOptions(sample_rate=16000, slice_len=16384, mode="hop")
  meter = common.CpuMeter()
  meter.start()
  report = prepare(folder, cache, opts, workers=workers)
  other = meter.stop()
  return {
    "files_used": report.files_used,
    "skipped": len(report.skipped),
    "clips": report.clips,
    "audio_s": round(report.seconds_decoded, 1),
    "wall_s": round(report.wall_seconds, 2),
    "x_real_time": round(report.seconds_decoded / report.wall_seconds, 1),
    "workers": workers,
    "other_cpu": common.r5(other),
    "summary": report.summary(),
  }


def bench_loader(cache_dir: str, batches: int) -> dict[str, float]:
  from data_pipelines import BatchSource, Loader, open_cache

  cache = open_cache(cache_dir)
  ids, _ = cache.labels()
  loader = Loader(BatchSource(cache, ids, batch_size=64, seed=0, group=1), prefetch=4)
  next(loader)  # thread start-up and first page-ins are not the steady state
  t0 = time.perf_counter()
  for _ in range(batches):
    audio, _ = next(loader)
  seconds = time.perf_counter() - t0
  loader.close()
  assert audio.shape == (1, 64, 16384, 1)
  return {
    "batches": batches,
    "seconds": round(seconds, 3),
    "batches_per_s": round(batches / seconds, 1),
    "audio_s_per_s": round(batches * 64 * 16384 / 16000 / seconds, 1),
    "cache_clips": len(cache),
    "cache_mb": round(
      sum(f.stat().st_size for f in Path(cache_dir, "shards").iterdir()) / 2**20, 1
    ),
  }


def time_train_step() -> dict[str, float]:
  """Seconds of one paper-size train step (after compiling and one warm-up step)."""
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from wavegan.presets import preset
  from wavegan.training import step as ts

  cfg = preset("paper")
  mesh = ts.data_mesh()
  models, state = ts.build(cfg)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  step = ts.make_train_step(models, cfg, mesh)
  rng = np.random.default_rng(0)
  real = rng.uniform(-1, 1, (cfg.optim.n_critic, cfg.train.batch_size, 16384, 1)).astype(np.float32)
  labels = np.zeros(real.shape[:2], np.int32)
  t0 = time.perf_counter()
  state, m = step(state, real, labels)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  state, m = step(state, real, labels)
  jax.block_until_ready(m)
  return {
    "step_s": round(time.perf_counter() - t0, 2),
    "compile_s": round(compile_s, 1),
    "batches_per_step": cfg.optim.n_critic,
    "measured": True,
  }


def bench_librosa(folder: str, n_files: int) -> dict[str, float]:
  import librosa

  # Files are numbered in the order of KINDS, so the first n cover every format and rate evenly.
  paths = sorted(
    (os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f[:1].isdigit()),
    key=os.path.basename,
  )
  sample = paths[:n_files]
  librosa.load(sample[0], sr=16000)  # numba compiles on the first call: not part of an epoch
  t0 = time.perf_counter()
  audio_s = 0.0
  for path in sample:
    y, _ = librosa.load(path, sr=16000, mono=True)
    audio_s += y.shape[0] / 16000
  seconds = time.perf_counter() - t0
  return {
    "files": len(sample),
    "audio_s": round(audio_s, 1),
    "seconds": round(seconds, 2),
    "x_real_time": round(audio_s / seconds, 1),
  }


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  common.emit("env", cpu=common.cpu_model(), cores=os.cpu_count())
  corpus = common.emit(
    "corpus",
    folder=args.corpus_dir,
    **make_corpus(args.corpus_dir, args.hours, args.seconds_per_file),
  )
  cache = os.path.join(tempfile.gettempdir(), "wavegan-bench-cache")
  prep = common.emit("prepare", **bench_prepare(args.corpus_dir, cache, args.workers))
  load = common.emit("loader", **bench_loader(cache, args.loader_batches))
  if args.train_step_s:
    train = common.emit("train", step_s=args.train_step_s, batches_per_step=5, measured=False)
  else:
    train = common.emit("train", **time_train_step())
  lib = common.emit("librosa", **bench_librosa(args.corpus_dir, args.librosa_files))
  consumed = train["batches_per_step"] / train["step_s"]  # batches/s the trainer eats
  common.emit(
    "summary",
    corpus_hours=round(corpus["audio_s"] / 3600, 2),
    prepare_x_real_time=prep["x_real_time"],
    prepare_goal_met=prep["x_real_time"] >= 500,
    loader_batches_per_s=load["batches_per_s"],
    train_batches_per_s=round(consumed, 3),
    loader_vs_train=round(load["batches_per_s"] / consumed, 1),
    loader_goal_met=load["batches_per_s"] / consumed >= 20,
    prepare_vs_librosa=round(prep["x_real_time"] / lib["x_real_time"], 1),
    loader_vs_librosa_per_epoch=round(load["audio_s_per_s"] / lib["x_real_time"], 1),
  )
  shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
  main()
