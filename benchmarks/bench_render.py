"""Render speed: clips/s from an exported paper-size model, with and without writing the files.

    python benchmarks/bench_render.py                 # 512 clips, batch 64, 16384 samples
    python benchmarks/bench_render.py --clips 256 --format flac

Records (JSON lines, "record" key):
  env       CPU, cores, JAX version
  export    the model file: size, seconds to write and to load
  generate  pure generation: `Synthesizer.from_latents` of every clip (device work + host copy)
  write     writing the same clips one after another in this thread, after generation
  render    `wavegan.synthesis.render.render` of one job of the same clips: generation with files written
            by background threads, manifest and latents included
  summary   render overhead over pure generation (goal: <= 20%), and what serial writing would add

The model is the paper's generator (d=64, 6 styles) with freshly initialised parameters: speed does
not depend on the values. The first batch (compilation) is excluded by a warm-up run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--clips", type=int, default=512)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--format", default="wav", choices=["wav", "flac", "ogg"])
  p.add_argument("--writers", type=int, default=2, help="background writer threads")
  p.add_argument("--repeats", type=int, default=2, help="timed repeats of each measurement")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  import jax

  from wavegan import Synthesizer
  from wavegan.presets import preset
  from wavegan.synthesis.render import RenderJob, render, write_clip
  from wavegan.training import step as ts

  common.emit("env", cpu=common.cpu_model(), cores=os.cpu_count(), jax=jax.__version__)
  cfg = preset("paper")
  cfg = cfg.__class__(
    **{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "num_styles": 6})}
  )
  styles = ("clap", "hat", "kick", "pluck", "snare", "tom")
  _, state = ts.build(cfg)
  tmp = tempfile.mkdtemp(prefix="wavegan-bench-render-")
  try:
    model_path = os.path.join(tmp, "paper.wgan")
    t0 = time.perf_counter()
    Synthesizer(cfg.model, styles, 16000, jax.device_get(state.ema_params)).export(model_path)
    t_export = time.perf_counter() - t0
    del state
    t0 = time.perf_counter()
    synth = Synthesizer.load(model_path, batch_size=args.batch)
    t_load = time.perf_counter() - t0
    common.emit(
      "export",
      mb=round(os.path.getsize(model_path) / 2**20, 1),
      write_s=round(t_export, 2),
      load_s=round(t_load, 2),
    )

    job = RenderJob(name="bench", count=args.clips, seed=0, format=args.format)
    z = synth.latents(args.clips, seed=0)
    synth.from_latents(z[: args.batch], None)  # compile
    gen, wrt, ren = [], [], []
    for r in range(args.repeats):
      t0 = time.perf_counter()
      audio = synth.from_latents(z, None)
      gen.append(time.perf_counter() - t0)
      out = os.path.join(tmp, f"serial{r}")
      os.makedirs(out)
      t0 = time.perf_counter()
      for i in range(args.clips):
        write_clip(os.path.join(out, f"{i:05d}.{args.format}"), audio[i], job, synth.sample_rate)
      wrt.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      report = render(synth, [job], os.path.join(tmp, f"render{r}"), writers=args.writers)
      ren.append(time.perf_counter() - t0)
      assert report.written == args.clips
    g, w, rd = min(gen), min(wrt), min(ren)
    common.emit(
      "generate", seconds=[round(x, 3) for x in gen], clips_per_s=round(args.clips / g, 1)
    )
    common.emit(
      "write",
      seconds=[round(x, 3) for x in wrt],
      clips_per_s=round(args.clips / w, 1),
      format=args.format,
    )
    common.emit(
      "render",
      seconds=[round(x, 3) for x in ren],
      clips_per_s=round(args.clips / rd, 1),
      writers=args.writers,
    )
    common.emit(
      "summary",
      clips=args.clips,
      batch=args.batch,
      generate_clips_per_s=round(args.clips / g, 1),
      render_clips_per_s=round(args.clips / rd, 1),
      render_overhead=round(rd / g - 1, 3),
      goal_met=rd / g - 1 <= 0.20,
      serial_write_overhead=round(w / g, 3),
    )
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
