"""Shared pieces of the speed benchmarks: CPU contention meter, JSON lines, analytic FLOPs,
quiet-median summaries and the PyTorch reference runner.

Nothing here imports JAX, so `bench_train.py` can still set `XLA_FLAGS` after importing it.

The FLOP formulas are those of the PyTorch reference (`shared/bench/torch_ref`, README "Analytic
FLOPs"), re-implemented so both implementations are scored against the same work:
  conv             L_out * C_in * C_out * K multiply-adds
  transposed conv  L_in  * C_in * C_out * K multiply-adds
  dense            in * out multiply-adds
FLOPs = 2 * MACs; biases, activations, phase shuffle, losses and Adam are ignored.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TORCH_REF = REPO_ROOT.parent / "shared" / "bench" / "torch_ref"
DEFAULT_TORCH_PYTHON = REPO_ROOT / ".venv-torchref" / "bin" / "python"
QUIET_LIMIT = 0.05  # a step is "quiet" when other processes used < 5% of the CPUs
SAMPLE_RATE = 16000  # for audio seconds per second


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------


def emit(record: str, **fields: Any) -> dict[str, Any]:
  """Prints one JSON line `{"record": record, **fields}` and returns the object."""
  obj = {"record": record, **fields}
  print(json.dumps(obj), flush=True)
  return obj


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def peak_rss_gb() -> float:
  """Peak resident memory of this process in GiB (ru_maxrss is KiB on Linux)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


# ------------------------------------------------------------------------------------------------
# contention
# ------------------------------------------------------------------------------------------------


def _machine_busy_s() -> float | None:
  """CPU seconds all processes have used since boot (all cores, without idle and iowait)."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  # user nice system idle iowait irq softirq steal (guest times are already in user/nice)
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
  """CPU seconds used by this process (all threads) and its waited-for children."""
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
  """Share of the machine's CPU time used by *other* processes between `start` and `stop`."""

  def __init__(self) -> None:
    self._busy0: float | None = None
    self._own0 = 0.0
    self._t0 = 0.0
    self.own_s = 0.0

  def start(self) -> None:
    self._busy0, self._own0, self._t0 = _machine_busy_s(), _own_cpu_s(), time.perf_counter()

  def stop(self) -> float | None:
    """Other processes' CPU share in [0, 1], or None if /proc/stat cannot be read. Also sets
    `own_s`, this process's CPU seconds since `start`."""
    wall = time.perf_counter() - self._t0
    self.own_s = _own_cpu_s() - self._own0
    busy = _machine_busy_s()
    if self._busy0 is None or busy is None or wall <= 0:
      return None
    other = (busy - self._busy0) - (_own_cpu_s() - self._own0)
    return round(min(max(other / (wall * (os.cpu_count() or 1)), 0.0), 1.0), 3)


def wait_quiet(max_wait_s: float, window_s: float = 0.5, limit: float = QUIET_LIMIT) -> float:
  """Sleeps until a `window_s` window in which other processes used < `limit` of the CPUs, or
  until `max_wait_s` has passed. Returns the seconds waited (0 when `max_wait_s` <= 0)."""
  if max_wait_s <= 0:
    return 0.0
  t0 = time.perf_counter()
  meter = CpuMeter()
  while time.perf_counter() - t0 < max_wait_s:
    meter.start()
    time.sleep(window_s)
    other = meter.stop()
    if other is None or other < limit:
      break
  return round(time.perf_counter() - t0, 2)


# ------------------------------------------------------------------------------------------------
# summaries
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
  """Median and quiet median (steps with other_cpu < QUIET_LIMIT) of per-step seconds."""

  median_s: float
  min_s: float
  quiet_median_s: float | None
  quiet_steps: int
  median_other_cpu: float
  mean_s: float  # steps that differ by design (lazy R1) need the mean, not the median
  mean_cpu_s: float | None  # this process's CPU seconds per step, when measured


def summarize(
  seconds: list[float], other_cpu: list[float | None], cpu_s: list[float] | None = None
) -> Timing:
  """Medians over all timed steps and over the quiet ones; means over all."""
  quiet = [s for s, o in zip(seconds, other_cpu) if o is not None and o < QUIET_LIMIT]
  return Timing(
    median_s=statistics.median(seconds),
    min_s=min(seconds),
    quiet_median_s=statistics.median(quiet) if quiet else None,
    quiet_steps=len(quiet),
    median_other_cpu=round(statistics.median([o or 0.0 for o in other_cpu]), 4),
    mean_s=statistics.fmean(seconds),
    mean_cpu_s=statistics.fmean(cpu_s) if cpu_s else None,
  )


def median_time(fn: Any, reps: int) -> float:
  """Median wall seconds of `reps` calls of fn() after one warm-up call (which compiles)."""
  fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def rate(amount: float, seconds: float | None, digits: int = 3) -> float | None:
  """amount / seconds, rounded; None when there is no time."""
  return round(amount / seconds, digits) if seconds else None


def r5(x: float | None) -> float | None:
  return None if x is None else round(x, 5)


# ------------------------------------------------------------------------------------------------
# analytic FLOPs (the reference's formulas)
# ------------------------------------------------------------------------------------------------

Layer = tuple[int, int, int, int]  # (c_in, c_out, len_in, len_out)


MAX_WIDTH_MULT = 32  # widths stop doubling at 32d (wavegan.models.waveform.layer_plan)


def _strides(slice_len: int) -> list[int]:
  plans = {
    16384: [4] * 5,
    32768: [4] * 5 + [2],
    65536: [4] * 6,
    131072: [4] * 6 + [2],
    262144: [4] * 7,
  }
  if slice_len not in plans:
    raise ValueError(f"slice_len must be one of {sorted(plans)}")
  return plans[slice_len]


def g_layers(dim: int, slice_len: int, channels: int = 1) -> list[Layer]:
  """G's transposed convs, widest first: 16d (32d for long slices) -> ... -> d -> channels."""
  strides = _strides(slice_len)
  n = len(strides)
  chans = [dim * min(2 ** (n - 1 - i), MAX_WIDTH_MULT) for i in range(n)] + [channels]
  layers, length = [], 16
  for i, s in enumerate(strides):
    layers.append((chans[i], chans[i + 1], length, length * s))
    length *= s
  return layers


def d_layers(dim: int, slice_len: int, channels: int = 1) -> list[Layer]:
  """D's strided convs: channels -> d -> 2d -> ... down to length 16.

  The strides are G's in the same order, as in the TF code: the longer slices' sixth layer
  (stride 2 for 32768) is D's last (32768 -> 8192 -> 2048 -> 512 -> 128 -> 32 -> 16).
  """
  strides = _strides(slice_len)
  chans = [channels] + [dim * min(2**i, MAX_WIDTH_MULT) for i in range(len(strides))]
  layers, length = [], slice_len
  for i, s in enumerate(strides):
    layers.append((chans[i], chans[i + 1], length, length // s))
    length //= s
  return layers


def flop_counts(
  dim: int = 64,
  slice_len: int = 16384,
  *,
  latent_dim: int = 100,
  kernel_len: int = 25,
  channels: int = 1,
  n_critic: int = 5,
) -> dict[str, Any]:
  """Analytic FLOPs per sample: G / D forward, one D update, one G update, one iteration, and
  per conv layer (`g_layers`, `d_layers`). At d=64 / 16384: G forward 1.6941 GFLOP, iteration
  101.34 GFLOP (6486 GFLOP at batch 64), as the reference reports.

  The G update is 3 F_G + 2 F_D less G's dense layer once (no gradient w.r.t. z), exactly as the
  reference counts it (3.3 MFLOP per sample less than the rounder formula).
  """
  k = kernel_len
  g, d = g_layers(dim, slice_len, channels), d_layers(dim, slice_len, channels)
  g_dense = 2 * latent_dim * 16 * g[0][0]
  g_convs = [2 * l_in * ci * co * k for ci, co, l_in, _ in g]
  d_convs = [2 * l_out * ci * co * k for ci, co, _, l_out in d]
  d_dense = 2 * 16 * d[-1][1]
  f_g = g_dense + sum(g_convs)
  f_d = sum(d_convs) + d_dense
  f_d0 = d_convs[0]  # no input gradient at D's first conv for real/fake terms
  d_step = (
    f_g  # G forward for the fake batch (no grad)
    + 3 * f_d  # D on real, fake, interpolates
    + 2 * (2 * f_d - f_d0)  # backward of the real and fake terms
    + f_d  # dD/dx_hat for the penalty
    + 2 * f_d
  )  # double backward of the penalty
  g_step = 3 * f_g - g_dense + 2 * f_d  # G fwd + bwd (no grad w.r.t. z), D fwd + input grads
  return {
    "g_fwd": f_g,
    "d_fwd": f_d,
    "d_step": d_step,
    "g_step": g_step,
    "iter": n_critic * d_step + g_step,
    "g_layers": g_convs,
    "d_layers": d_convs,
  }


# ------------------------------------------------------------------------------------------------
# PyTorch reference
# ------------------------------------------------------------------------------------------------


def add_torch_args(parser: Any) -> None:
  """The --vs-torch / --torch-python / --torch-ref / --wait-quiet options of both benchmarks."""
  parser.add_argument(
    "--vs-torch",
    action="store_true",
    help="after the JAX run, run the PyTorch reference with the same settings "
    "and print a `compare` record",
  )
  parser.add_argument(
    "--torch-python",
    default=str(DEFAULT_TORCH_PYTHON),
    help="python of a venv with torch (default: .venv-torchref/bin/python)",
  )
  parser.add_argument(
    "--torch-ref",
    default=str(DEFAULT_TORCH_REF),
    help="folder holding bench.py (default: ../shared/bench/torch_ref)",
  )
  parser.add_argument(
    "--wait-quiet",
    type=float,
    default=0.0,
    metavar="S",
    help="before each timed step wait up to S s for a 0.5 s window in which "
    "other processes use < 5%% of the CPUs (for shared machines)",
  )


def check_torch_setup(torch_python: str, torch_ref: str) -> None:
  """Exits with instructions when the reference or its venv is missing (checked before the JAX
  run, so a long benchmark does not fail at the end)."""
  if not (Path(torch_ref) / "bench.py").is_file():
    sys.exit(f"error: no bench.py in {torch_ref}; pass --torch-ref DIR (the torch_ref folder)")
  if not Path(torch_python).is_file():
    sys.exit(
      f"error: {torch_python} not found. Create the reference's venv with\n"
      f"  python3 -m venv {REPO_ROOT}/.venv-torchref\n"
      f"  {REPO_ROOT}/.venv-torchref/bin/pip install torch==2.13.0 numpy\n"
      f"or pass --torch-python PATH"
    )


_LAUNCHER = (
  "import os, sys\nif sys.stdin.readline() == 'go\\n':\n  os.execv(sys.argv[1], sys.argv[1:])\n"
)


class TorchReference:
  """The reference's bench.py, started early and run later.

  The process is spawned at construction, while this process is still small (before JAX is
  imported), and waits for `run`. Linux carries a process's peak RSS (ru_maxrss) across fork and
  exec, so a child forked after the JAX run would report the JAX process's peak as its own.
  """

  def __init__(
    self,
    what: str,
    *,
    batch: int,
    steps: int,
    warmup: int,
    dim: int,
    slice_len: int,
    wait_quiet_s: float,
    torch_python: str,
    torch_ref: str,
  ) -> None:
    self.what = what
    self.cwd = torch_ref
    self.args = [
      "bench.py",
      "--what",
      what,
      "--batch",
      str(batch),
      "--steps",
      str(steps),
      "--warmup",
      str(warmup),
      "--dim",
      str(dim),
      "--slice-len",
      str(slice_len),
      "--threads",
      "2",
      "--wait-quiet",
      str(wait_quiet_s),
    ]
    self.proc = subprocess.Popen(
      [torch_python, "-c", _LAUNCHER, torch_python, *self.args],
      cwd=torch_ref,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )

  def cancel(self) -> None:
    """Stops the waiting process (when the JAX run failed)."""
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()

  def run(self) -> dict[str, Any] | None:
    """Runs the benchmark, re-printing each of its records tagged "impl": "torch".

    Returns its summary record (`gen` / `train`), or None if it failed.
    """
    proc = self.proc
    assert proc.stdin is not None and proc.stdout is not None
    emit("torch_run", impl="torch", cmd=" ".join(self.args), cwd=str(self.cwd))
    t0 = time.perf_counter()
    proc.stdin.write("go\n")
    proc.stdin.close()
    summary = None
    for line in proc.stdout:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        print(line, end="", file=sys.stderr)
        continue
      rec = {"record": rec.pop("record", "?"), "impl": "torch", **rec}
      print(json.dumps(rec), flush=True)
      if rec["record"] == self.what:
        summary = rec
    if proc.wait() != 0:
      emit(
        "error",
        impl="torch",
        returncode=proc.returncode,
        message="the PyTorch reference failed (its stderr is above)",
      )
      return None
    emit("torch_done", impl="torch", wall_s=round(time.perf_counter() - t0, 1))
    return summary


def compare(
  what: str, jax_timing: Timing, torch_summary: dict[str, Any] | None, per: str
) -> dict[str, Any] | None:
  """Prints the `compare` record: speedup = torch seconds / JAX seconds (> 1: JAX is faster).

  Uses the quiet medians when both runs have quiet steps, else the plain medians.
  """
  if torch_summary is None:
    return None
  t_med = torch_summary[f"median_s_per_{per}"]
  t_quiet = torch_summary.get(f"quiet_median_s_per_{per}")
  if jax_timing.quiet_median_s is not None and t_quiet is not None:
    basis, j_s, t_s = "quiet_median", jax_timing.quiet_median_s, t_quiet
  else:
    basis, j_s, t_s = "median", jax_timing.median_s, t_med
  return emit(
    "compare",
    what=what,
    basis=basis,
    **{f"jax_s_per_{per}": r5(j_s), f"torch_s_per_{per}": r5(t_s)},
    jax_speedup_vs_torch=round(t_s / j_s, 3),
    note="jax_speedup_vs_torch = torch_s / jax_s, the throughput ratio (> 1: JAX is faster)",
  )


def jax_env(jax: Any, devices: Iterable[Any], **extra: Any) -> dict[str, Any]:
  """The `env` record's fields for a JAX run."""
  import flax  # imported here, after the caller has set XLA_FLAGS and imported jax
  import jaxlib

  devices = list(devices)
  return dict(
    impl="jax",
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
    flax=flax.__version__,
    python=platform.python_version(),
    backend=jax.default_backend(),
    device_count=jax.device_count(),
    devices_used=len(devices),
    device_kind=devices[0].device_kind,
    cpu=cpu_model(),
    cores=os.cpu_count(),
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    **extra,
  )


def run_with_reference(what: str, args: Any, bench_jax: Any, per: str) -> None:
  """Runs `bench_jax(args)` and, with --vs-torch, the reference with the same settings.

  The reference process is started first, while this process is still small (Linux carries the
  peak-memory figure across fork and exec), and waits until the JAX measurement is done.
  """
  torch_ref = None
  if args.vs_torch:
    check_torch_setup(args.torch_python, args.torch_ref)
    torch_ref = TorchReference(
      what,
      batch=args.batch,
      steps=args.steps,
      warmup=args.warmup,
      dim=args.dim,
      slice_len=args.slice_len,
      wait_quiet_s=args.wait_quiet,
      torch_python=args.torch_python,
      torch_ref=args.torch_ref,
    )
  try:
    timing = bench_jax(args)
  except BaseException:
    if torch_ref is not None:
      torch_ref.cancel()
    raise
  if torch_ref is not None:
    compare(what, timing, torch_ref.run(), per=per)
