"""`wavegan` command line: a thin front over the library.

wavegan make-corpus OUT_DIR [--per-class N] [--sample-rate SR] [--seed S]
wavegan prepare DATA_DIR --out CACHE [--sample-rate SR] [--slice-len L] [--mode first|hop] ...
wavegan train --workdir RUN [--data DIR] [--preset tiny|demo|demo-specgan|paper|large] [--steps N] [--set k=v ...]
              [--coordinator HOST:PORT --num-processes N --process-id I]
wavegan generate --workdir RUN --n N [--style STYLE] [--seed S] --out DIR [--overwrite]
wavegan export --workdir RUN --out MODEL [--overwrite]
wavegan render JOBS.toml (--model MODEL | --workdir RUN) [--out DIR] [--overwrite]
wavegan evaluate --workdir RUN [--data DIR] [--n N] [--out DIR]
wavegan plot --workdir RUN [--out PNG]
wavegan studio (--model MODEL | --workdir RUN) [--out DIR] [--port P] [--host HOST]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

from data_pipelines import DataError
from wavegan.config import MAX_SEED, SLICE_LENS, Config, ConfigError, apply_overrides
from wavegan.errors import UserError, describe_os_error, one_line
from wavegan.presets import PRESETS, preset

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130
TRACEBACK_ENV = "WAVEGAN_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


def _err(msg: str) -> None:
  print(one_line(msg), file=sys.stderr, flush=True)


def _need_folder(path: str, option: str) -> None:
  """Refuses a path that should be an existing folder, saying what it is instead."""
  if not os.path.exists(path):
    raise DataError(f"{option} {path}: no such folder")
  if not os.path.isdir(path):
    raise DataError(f"{option} {path} is a file, not a folder")


def _need_folder_or_nothing(path: str | None, option: str) -> None:
  """Refuses an output folder that exists as something else (a file)."""
  if path is not None and os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{option} {path} is a file; it must be a folder (or not exist yet)")


def _ranged(convert: type, low: float, high: float):
  """argparse type: a finite int or float in [low, high], so that 2**70 or nan is refused here
  with one line, not deep inside."""
  what = "an integer" if convert is int else "a number"

  def parse(text: str):
    try:
      value = convert(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ((convert is int or math.isfinite(value)) and low <= value <= high):
      shown = text if len(text) <= 24 else text[:20] + "..."
      bounds = f"[{low}, {high}]" if convert is int else f"[{low:g}, {high:g}]"
      raise argparse.ArgumentTypeError(f"{shown} is out of range; must be {what} in {bounds}")
    return value

  return parse


def _int_in(low: int, high: int):
  return _ranged(int, low, high)


def _float_in(low: float, high: float):
  return _ranged(float, low, high)


SEED = _int_in(0, MAX_SEED)
COUNT = _int_in(1, 10**9)
RATE = _int_in(1000, 384000)
DB = _float_in(-200.0, 0.0)


def cmd_make_corpus(args: argparse.Namespace) -> None:
  from data_pipelines import make_corpus

  summary = make_corpus(
    args.out_dir, per_class=args.per_class, sample_rate=args.sample_rate, seed=args.seed
  )
  counts = ", ".join(f"{k}: {v}" for k, v in summary["counts"].items())
  print(f"wrote {sum(summary['counts'].values())} clips to {args.out_dir} ({counts})")


def cmd_prepare(args: argparse.Namespace) -> None:
  from data_pipelines import prepare
  from wavegan.inputs import slice_options

  cfg = preset("paper")
  data = {
    "sample_rate": args.sample_rate,
    "slice_mode": args.mode,
    "slice_hop": args.hop,
    "pad_mode": args.pad,
    "silence_db": args.silence_db,
    "trim_db": args.trim_db,
    "normalize": args.normalize,
    "loudness_lufs": args.loudness_lufs,
    "max_seconds": args.max_seconds,
  }
  model = {"slice_len": args.slice_len, "channels": args.channels}
  cfg = dataclasses.replace(
    cfg,
    data=dataclasses.replace(cfg.data, **{k: v for k, v in data.items() if v is not None}),
    model=dataclasses.replace(cfg.model, **{k: v for k, v in model.items() if v is not None}),
  )
  cfg.validate()
  _need_folder(args.data_dir, "DATA_DIR")
  _need_folder_or_nothing(args.out, "--out")
  report = prepare(
    args.data_dir,
    args.out,
    slice_options(cfg),
    dtype=args.dtype,
    manifest=args.manifest,
    workers=args.workers,
    force=args.force,
    progress=not args.no_progress,
    log=_err if args.verbose else None,
  )
  rate = report.seconds_decoded / max(report.wall_seconds, 1e-9)
  print(f"{args.out}: {report.summary()}")
  print(
    f"decoded {report.decoded} files ({report.seconds_decoded:.0f} s of audio) in "
    f"{report.wall_seconds:.1f} s ({rate:.0f}x real time); reasons for every skip in "
    f"{os.path.join(args.out, 'prepare_report.json')}"
  )


def requested_config(args: argparse.Namespace) -> tuple[Config, str]:
  """The config a `train` invocation asks for: the saved run's, or a preset, plus overrides."""
  from wavegan.models import kinds
  from wavegan.run import saved_run

  saved = saved_run(args.workdir)
  if saved is not None:
    if args.preset and saved.preset and args.preset != saved.preset:
      raise ConfigError(
        f"{args.workdir} is a {saved.preset!r} run; drop --preset to resume it "
        "or use a new --workdir"
      )
    cfg, name = saved.config, saved.preset
  else:
    name = args.preset or "paper"
    cfg = preset(name)
  cfg = apply_overrides(cfg, args.set or [])
  if args.data is not None:
    _need_folder(args.data, "--data")
    cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, path=os.path.abspath(args.data))
    )
  if cfg.data.manifest:
    cfg = dataclasses.replace(
      cfg, data=dataclasses.replace(cfg.data, manifest=os.path.abspath(cfg.data.manifest))
    )
  if args.steps is not None:
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
  return kinds.check(cfg.validate()), name


def cmd_train(args: argparse.Namespace) -> None:
  from wavegan.training import distributed

  _need_folder_or_nothing(args.workdir, "--workdir")
  # Before anything touches a device: a multi-process job must be joined first.
  distributed.initialize(args.coordinator, args.num_processes, args.process_id, log=_err)
  from wavegan.training.loop import train

  cfg, name = requested_config(args)
  run, state = train(cfg, args.workdir, preset=name, progress=not args.no_progress, log=_err)
  if distributed.is_main():
    styles = ", ".join(run.styles)
    print(f"{args.workdir}: trained to step {int(state.step)} on styles [{styles}]")


def cmd_generate(args: argparse.Namespace) -> None:
  from wavegan.synthesis.render import RenderJob, parse_style, render
  from wavegan.synthesis.synthesizer import Synthesizer

  _need_folder_or_nothing(args.out, "--out")
  synth = Synthesizer.load(args.workdir)
  job = RenderJob(
    name=f"generate-s{args.seed}-{args.style or 'all'}",
    count=args.n,
    seed=args.seed,
    style=parse_style(args.style),
    filename="{style}_s{seed}_{index:04d}",
  )

  def refuse_existing(plans) -> None:
    files = [p.file(synth, i) for p in plans for i in range(p.count)]
    existing = [f for f in files if os.path.exists(os.path.join(args.out, f))]
    if existing and not args.overwrite:
      raise ConfigError(
        f"{os.path.join(args.out, existing[0])} exists ({len(existing)} of "
        f"{len(files)} clips would be overwritten); pass --overwrite or choose "
        "another --out"
      )

  report = render(synth, [job], args.out, overwrite=args.overwrite, on_plan=refuse_existing)
  print(f"wrote {report.written} clips to {args.out}")


def cmd_export(args: argparse.Namespace) -> None:
  from wavegan.synthesis.synthesizer import Synthesizer

  if os.path.isdir(args.out):
    raise ConfigError(
      f"--out {args.out} is a folder; give the model file's name, e.g. "
      f"{os.path.join(args.out, 'model.wgan')}"
    )
  if os.path.exists(args.out) and not args.overwrite:
    raise ConfigError(f"{args.out} exists; pass --overwrite or choose another --out")
  if not os.path.isdir(args.workdir):
    raise ConfigError(f"{args.workdir}: no such run folder")
  synth = Synthesizer.from_workdir(args.workdir)
  synth.export(args.out)
  size = os.path.getsize(args.out) / 2**20
  styles = ", ".join(synth.styles) or "(unconditional)"
  print(f"wrote {args.out} ({size:.1f} MB; step {synth.info.get('step')}; styles {styles})")


def cmd_render(args: argparse.Namespace) -> None:
  from wavegan.synthesis.render import read_jobs, render
  from wavegan.synthesis.synthesizer import Synthesizer

  jobs = read_jobs(args.jobs)  # every job is checked before the model is even loaded
  if (args.model is None) == (args.workdir is None):
    raise ConfigError("pass exactly one of --model MODEL_FILE and --workdir RUN")
  out = args.out or os.path.splitext(args.jobs)[0] + "_render"
  _need_folder_or_nothing(out, "--out")
  synth = Synthesizer.load(args.model or args.workdir, batch_size=args.batch_size)
  report = render(synth, jobs, out, overwrite=args.overwrite, progress=not args.no_progress)
  print(
    f"{out}: wrote {report.written} clips, skipped {report.skipped} that existed "
    f"({report.seconds:.1f} s); manifest in {os.path.join(out, 'manifest.csv')}"
  )


def cmd_evaluate(args: argparse.Namespace) -> None:
  from wavegan.evaluation.report import evaluate_run

  _need_folder_or_nothing(args.out, "--out")
  if args.data is not None:
    _need_folder(args.data, "--data")
  report = evaluate_run(
    args.workdir, data=args.data, n=args.n, out=args.out, seed=args.seed, log=_err
  )
  gen, real, noise = report["generated"], report["real_held_out"], report["noise"]
  for key in ("style_accuracy", "inception_score", "fd", "kid", "ndb_over_k"):
    if key in gen:
      print(
        f"{key:16s} generated {gen[key]:10.4g}   real {real[key]:10.4g}   noise {noise[key]:10.4g}"
      )
  where = args.out or os.path.join(args.workdir, "eval", f"step_{report['step']:07d}")
  print(f"report: {os.path.join(where, 'report.md')}")


def cmd_plot(args: argparse.Namespace) -> None:
  from wavegan.synthesis.curves import plot_run

  if not os.path.isdir(args.workdir):
    raise ConfigError(f"{args.workdir}: no such run folder")
  if args.out is not None and os.path.isdir(args.out):
    raise ConfigError(f"--out {args.out} is a folder; give the PNG file's name")
  try:
    path = plot_run(args.workdir, args.out)
  except (OSError, ValueError) as err:
    raise ConfigError(str(err)) from None
  print(f"wrote {path}")


def cmd_studio(args: argparse.Namespace) -> None:
  if (args.model is None) == (args.workdir is None):
    raise ConfigError("pass exactly one of --model MODEL_FILE and --workdir RUN")
  try:
    import gradio  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError(
      "the studio needs its optional extra: pip install 'wavegan-jax[studio]' "
      "(in a checkout: pip install -e '.[studio]')"
    ) from None
  from wavegan.studio import Studio, serve

  source = args.model or args.workdir
  out = args.out or (
    os.path.join(args.workdir, "studio")
    if args.workdir
    else os.path.splitext(args.model)[0] + "_studio"
  )
  _need_folder_or_nothing(out, "--out")
  studio = Studio.load(source, out)
  _err(f"compiling {source} ...")
  url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
  _err(f"studio on {url} (Ctrl-C stops it); favourites go to {out}")
  serve(studio, host=args.host, port=args.port)


class UsageError(UserError):
  """A command line that argparse cannot parse."""


class _Parser(argparse.ArgumentParser):
  """argparse, but a mistake is a `UsageError` (one line, exit 2) instead of usage text."""

  def error(self, message: str):
    raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
    prog="wavegan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("make-corpus", help="write the built-in procedural drum corpus as WAVs")
  p.add_argument("out_dir")
  p.add_argument("--per-class", type=_int_in(1, 100000), default=64)
  p.add_argument("--sample-rate", type=RATE, default=16000)
  p.add_argument("--seed", type=SEED, default=0)
  p.set_defaults(func=cmd_make_corpus)

  p = sub.add_parser("prepare", help="decode a folder of audio into a training cache (incremental)")
  p.add_argument("data_dir", help="folder of audio, one sub-folder per style")
  p.add_argument(
    "--out", required=True, help="cache folder; an existing cache is brought up to date"
  )
  p.add_argument("--sample-rate", type=RATE, help="target rate in Hz (default 16000)")
  p.add_argument("--slice-len", type=int, choices=SLICE_LENS, help="samples per window")
  p.add_argument(
    "--channels", type=_int_in(1, 64), help="channels per window (default 1: mono mixdown)"
  )
  p.add_argument(
    "--mode", choices=["first", "hop"], help="onset window only, or every --hop samples"
  )
  p.add_argument(
    "--hop",
    type=_int_in(1, 2**31 - 1),
    help="samples between windows in hop mode (default: slice length)",
  )
  p.add_argument(
    "--pad",
    choices=["zero", "reflect", "loop", "drop"],
    help="what to do with windows past a file's end (default zero)",
  )
  p.add_argument("--silence-db", type=DB, help="leave out windows quieter than this RMS (dBFS)")
  p.add_argument("--trim-db", type=DB, help="trim leading samples quieter than this (dBFS)")
  p.add_argument(
    "--normalize", choices=["peak", "loudness", "none"], help="per-file gain (default peak)"
  )
  p.add_argument(
    "--loudness-lufs",
    type=_float_in(-70.0, 0.0),
    help="target for --normalize loudness (default -20)",
  )
  p.add_argument(
    "--max-seconds", type=_float_in(0.001, 10**6), help="skip longer files unread (default 3600)"
  )
  p.add_argument("--manifest", help="CSV/JSON file with label fields and attributes per file")
  p.add_argument(
    "--dtype", choices=["int16", "float32"], default="int16", help="storage of windows"
  )
  p.add_argument(
    "--workers", type=_int_in(1, 1024), help="decoder processes (default: one per CPU core)"
  )
  p.add_argument("--force", action="store_true", help="rebuild the cache from scratch")
  p.add_argument("--verbose", action="store_true", help="print every skipped file and its reason")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_prepare)

  p = sub.add_parser("train", help="train a new run or resume one")
  p.add_argument("--workdir", required=True, help="run folder; an existing run resumes")
  p.add_argument(
    "--data",
    help="folder of audio (one sub-folder per style) or a prepared cache "
    "(default: the built-in corpus)",
  )
  p.add_argument("--preset", choices=sorted(PRESETS), help="starting config (new runs: paper)")
  p.add_argument("--steps", type=COUNT, help="total G updates to reach")
  p.add_argument(
    "--coordinator",
    metavar="HOST:PORT",
    help="multi-process job: process 0's address (with --num-processes, --process-id; "
    "automatic on multi-host TPU VMs and under SLURM)",
  )
  p.add_argument(
    "--num-processes", type=_int_in(1, 65536), help="multi-process job: number of processes"
  )
  p.add_argument(
    "--process-id", type=_int_in(0, 65535), help="multi-process job: this process' rank"
  )
  p.add_argument(
    "--set",
    action="append",
    metavar="KEY=VALUE",
    help="override a config value, e.g. --set model.dim=32 (repeatable)",
  )
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_train)

  p = sub.add_parser("generate", help="render clips from a trained run")
  p.add_argument("--workdir", required=True)
  p.add_argument("--n", type=COUNT, required=True)
  p.add_argument(
    "--style",
    help="style name, a mix 'kick=0.7,tom=0.3', fields and attributes "
    "'instrument=snare,pitch=220', or JSON (default: every style in turn)",
  )
  p.add_argument("--seed", type=SEED, default=0)
  p.add_argument("--out", required=True)
  p.add_argument("--overwrite", action="store_true", help="replace existing files")
  p.set_defaults(func=cmd_generate)

  p = sub.add_parser("export", help="write a run's generator as one self-contained model file")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True, help="model file, e.g. drums.wgan")
  p.add_argument("--overwrite", action="store_true", help="replace an existing file")
  p.set_defaults(func=cmd_export)

  p = sub.add_parser("render", help="render the jobs of a TOML file (resumable)")
  p.add_argument("jobs", help="TOML job file with [[job]] tables")
  p.add_argument("--model", help="exported model file")
  p.add_argument("--workdir", help="training run folder (its latest checkpoint)")
  p.add_argument("--out", help="output folder (default: JOBS_render next to the job file)")
  p.add_argument("--overwrite", action="store_true", help="replace existing files (default: skip)")
  p.add_argument("--batch-size", type=_int_in(1, 4096), default=64, help="clips per generator call")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=cmd_render)

  p = sub.add_parser("evaluate", help="score a run against its corpus (IS, FD, KID, NDB, accuracy)")
  p.add_argument("--workdir", required=True)
  p.add_argument("--data", help="corpus folder or cache (default: the run's own)")
  p.add_argument("--n", type=_int_in(1, 10**6), default=1000, help="generated clips")
  p.add_argument("--seed", type=SEED, default=0, help="latent seed of the generated clips")
  p.add_argument("--out", help="report folder (default: RUN/eval/step_NNNNNNN)")
  p.set_defaults(func=cmd_evaluate)

  p = sub.add_parser("plot", help="draw a run's loss and metric curves to a PNG")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", help="PNG path (default: RUN/curves.png)")
  p.set_defaults(func=cmd_plot)

  p = sub.add_parser(
    "studio", help="play a model in the browser: mix styles, roll seeds, keep clips"
  )
  p.add_argument("--model", help="exported model file")
  p.add_argument("--workdir", help="training run folder (its latest checkpoint)")
  p.add_argument("--out", help="favourites folder (default: RUN/studio or MODEL_studio)")
  p.add_argument("--port", type=_int_in(1, 65535), default=7860)
  p.add_argument(
    "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
  )
  p.set_defaults(func=cmd_studio)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs one command; every failure is one line on stderr and an exit code: 2 for a user's
  mistake or a resource that does not fit, 130 for Ctrl-C, 1 for a fault of the toolkit."""
  try:
    args = build_parser().parse_args(argv)
    args.func(args)
  except UserError as e:
    _err(f"wavegan: error: {e}")
    return EXIT_USER_ERROR
  except KeyboardInterrupt as e:
    detail = f": {e}" if str(e) else ""
    _err(f"wavegan: interrupted{detail}")
    return EXIT_INTERRUPTED
  except OSError as e:
    _err(f"wavegan: error: {describe_os_error(e)}")
    return EXIT_USER_ERROR
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get(TRACEBACK_ENV):
      raise
    _err(
      f"wavegan: internal error: {type(e).__name__}: {e} (set {TRACEBACK_ENV}=1 for the "
      "traceback, and please report it)"
    )
    return EXIT_INTERNAL_ERROR
  return 0


if __name__ == "__main__":
  sys.exit(main())
