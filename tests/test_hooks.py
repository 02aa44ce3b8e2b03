"""Each training hook on its own, with fakes for the state, the metrics and what it writes to."""

import json
import os
import re
import signal
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from wavegan.errors import NonFiniteError
from wavegan.training import hooks
from wavegan.training.hooks import (
  EVAL_CHUNK,
  Budget,
  EvalHook,
  FiniteGuard,
  Hook,
  InterruptHook,
  LogHook,
  PreviewHook,
  ProgressHook,
  SaveHook,
  StopFlag,
  StopHook,
  Untimed,
)

STATE = types.SimpleNamespace(ema_params="ema")
SHARDING = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def metrics(d=-0.5, g=0.25):
  return {"d/loss": jnp.float32(d), "g/loss": jnp.float32(g)}


class FakeTensorBoard:
  def __init__(self):
    self.calls, self.closed = [], False

  def scalars(self, step, values):
    self.calls.append(("scalars", step, dict(values)))

  def audio(self, step, tag, clip, sample_rate):
    self.calls.append(("audio", step, tag, np.asarray(clip), sample_rate))

  def image(self, step, tag, png_path):
    self.calls.append(("image", step, tag, png_path))

  def close(self):
    self.closed = True


class FakeBar:
  def __init__(self):
    self.postfix, self.updates, self.closed = [], 0, False

  def set_postfix(self, values, refresh=True):
    self.postfix.append(values)

  def update(self, n):
    self.updates += n

  def close(self):
    self.closed = True


class FakeCheckpointer:
  def __init__(self):
    self.saved, self.closed = [], False

  def save(self, step, tree, metadata):
    self.saved.append((step, tree, metadata))

  def close(self):
    self.closed = True


class FakeClock:
  """Replaces time.perf_counter (seconds that move only when told)."""

  def __init__(self, monkeypatch):
    self.now = 100.0
    monkeypatch.setattr(time, "perf_counter", lambda: self.now)


def records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def bad_guard(tmp_path, last_good=None, bad_step=3):
  guard = FiniteGuard(str(tmp_path), last_good, SHARDING)
  guard.observe(bad_step - 1, metrics())
  guard.observe(bad_step, metrics(d=float("nan")))
  return guard


# -- Hook ------------------------------------------------------------------------------------------


def test_a_hook_is_due_every_n_steps_or_never():
  hook = Hook()
  hook.every = 3
  assert [s for s in range(1, 10) if hook.due(s)] == [3, 6, 9]
  hook.every = 0
  assert not any(hook.due(s) for s in range(1, 10))
  assert Hook().at_end and Hook().start(0, STATE) is None and Hook().close() is None


# -- Stopping --------------------------------------------------------------------------------------


def test_the_guard_names_the_first_bad_step_and_the_last_good_checkpoint(tmp_path):
  guard = FiniteGuard(str(tmp_path), None, SHARDING)
  for step in (1, 2):
    guard.observe(step, metrics())
  guard.check(metrics())  # all finite: nothing happens
  guard.observe(3, metrics(d=float("inf")))
  guard.observe(4, metrics(d=float("nan"), g=float("nan")))  # a later bad step is not the first
  with pytest.raises(NonFiniteError) as e:
    guard.check(metrics(d=float("nan"), g=float("nan")))
  msg = str(e.value)
  assert msg.startswith("step 3: a loss or gradient is not finite (d/loss=nan, g/loss=nan)")
  assert "no checkpoint was saved" in msg and os.path.join(str(tmp_path), "checkpoints") in msg
  guard.last_good = 2
  with pytest.raises(NonFiniteError, match="the last good checkpoint, step 2, is kept"):
    guard.check(metrics())
  assert int(guard.first_bad) == 3


def test_budget_counts_only_time_outside_paused_blocks(monkeypatch):
  clock = FakeClock(monkeypatch)
  off = Budget(0, 0)
  clock.now += 1e6
  assert not off.spent() and str(off) == ""

  budget = Budget(wall_minutes=1.0, cpu_minutes=0)
  clock.now += 50
  with budget.paused():
    clock.now += 30  # a preview: not counted
  assert not budget.spent() and str(budget) == "0.8 min wall"
  clock.now += 11
  assert budget.spent() and str(budget) == "1.0 min wall"


def test_untimed_leaves_calls_out_of_the_budget_but_not_start(monkeypatch):
  clock = FakeClock(monkeypatch)

  class Slow(Hook):
    every = 2

    def start(self, step, state):
      clock.now += 40

    def __call__(self, step, state, metrics):
      clock.now += 1000
      return "why"

    def close(self):
      self.closed = True

  budget = Budget(wall_minutes=1.0, cpu_minutes=0)
  slow = Slow()
  hook = Untimed(slow, budget)
  assert (hook.every, hook.at_end, hook.due(2), hook.due(3)) == (2, True, True, False)
  assert hook(2, STATE, {}) == "why" and not budget.spent()
  hook.start(0, STATE)
  clock.now += 21
  assert budget.spent()
  hook.close()
  assert slow.closed


def test_stop_hook_ends_the_run_when_the_budget_is_spent(monkeypatch, tmp_path):
  clock = FakeClock(monkeypatch)
  lines = []
  guard = FiniteGuard(str(tmp_path), None, SHARDING)
  stop = StopHook(Budget(wall_minutes=1.0, cpu_minutes=0), guard, lines.append)
  assert (stop.every, stop.at_end) == (1, False)
  assert stop(1, STATE, metrics()) is None and lines == []
  clock.now += 61
  reason = stop(2, STATE, metrics())
  assert reason == "training time limit reached at step 2 (1.0 min wall)"
  assert lines == ["\ntraining time limit reached at step 2 (1.0 min wall)"]


def test_stop_hook_checks_finiteness_every_sync_steps_only(tmp_path):
  checked = []

  class Guard:
    def check(self, m):
      checked.append(m)

  stop = StopHook(Budget(0, 0), Guard(), print)
  for step in range(1, 20):
    assert stop(step, STATE, {"step": step}) is None
  assert [m["step"] for m in checked] == [8, 16]  # MAX_STEPS_IN_FLIGHT
  with pytest.raises(NonFiniteError, match="step 3"):
    StopHook(Budget(0, 0), bad_guard(tmp_path), print, sync_every=4)(4, STATE, metrics())
  StopHook(Budget(0, 0), bad_guard(tmp_path), print, sync_every=4)(5, STATE, metrics())


def test_interrupt_hook_catches_signals_between_start_and_close(tmp_path):
  before = signal.getsignal(signal.SIGINT)
  hook = InterruptHook(lambda *a: None, str(tmp_path), print)
  hook.start(0, STATE)
  try:
    assert not hook.due(1)
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C is a request ...
    assert hook.due(1) and hook.flag.requested
    with pytest.raises(KeyboardInterrupt):  # ... the second aborts
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    hook.close()
  assert signal.getsignal(signal.SIGINT) is before


def test_interrupt_hook_saves_the_step_and_raises(tmp_path):
  saved, lines = [], []
  flag = StopFlag()
  hook = InterruptHook(lambda *a: saved.append(a), str(tmp_path), lines.append, flag)
  assert (hook.at_end, hook.due(5)) == (False, False)
  flag.requested = True
  assert hook.due(5)
  m = metrics()
  with pytest.raises(KeyboardInterrupt) as e:
    hook(5, STATE, m)
  where = os.path.join(str(tmp_path), "checkpoints")
  assert saved == [(5, STATE, m)]
  assert lines == [f"\nstopping: saving step 5 to {where}"]
  assert str(e.value) == (
    f"training stopped at step 5, saved in {where}; run the same command to resume"
  )


# -- Reporting -------------------------------------------------------------------------------------


def test_log_hook_writes_metrics_tensorboard_and_the_bar(monkeypatch, tmp_path):
  clock = FakeClock(monkeypatch)
  monkeypatch.setattr(hooks.time, "time", lambda: 1234.5)
  path = str(tmp_path / "metrics.jsonl")
  tb, bar = FakeTensorBoard(), FakeBar()
  guard = FiniteGuard(str(tmp_path), None, SHARDING)
  log = LogHook(10, guard, 20, metrics_path=path, tensorboard=tb, bar=bar)
  assert (log.every, log.at_end, log.due(30), log.due(31)) == (10, True, True, False)
  clock.now += 4.0
  assert log(30, STATE, metrics()) is None
  clock.now += 0.5
  log(31, STATE, metrics(d=1.0))  # the last step: speed over the one step since the last log
  assert [list(r) for r in records(path)] == [
    ["step", "time", "steps_per_s", "d/loss", "g/loss"]
  ] * 2
  assert records(path) == [
    {"step": 30, "time": 1234.5, "steps_per_s": 2.5, "d/loss": -0.5, "g/loss": 0.25},
    {"step": 31, "time": 1234.5, "steps_per_s": 2.0, "d/loss": 1.0, "g/loss": 0.25},
  ]
  assert tb.calls == [
    ("scalars", 30, {"d/loss": -0.5, "g/loss": 0.25, "steps_per_s": 2.5}),
    ("scalars", 31, {"d/loss": 1.0, "g/loss": 0.25, "steps_per_s": 2.0}),
  ]
  assert bar.postfix == [
    {"d": "-0.500", "g": "0.250", "it/s": "2.50"},
    {"d": "1.000", "g": "0.250", "it/s": "2.00"},
  ]
  log.close()
  assert tb.closed


def test_log_hook_writes_nothing_of_a_bad_step_or_on_other_processes(tmp_path):
  path = tmp_path / "metrics.jsonl"
  tb = FakeTensorBoard()
  bad = LogHook(1, bad_guard(tmp_path), 0, metrics_path=str(path), tensorboard=tb)
  with pytest.raises(NonFiniteError, match="step 3"):
    bad(3, STATE, metrics(d=float("nan")))
  assert not path.exists() and tb.calls == []
  quiet = LogHook(1, FiniteGuard(str(tmp_path), None, SHARDING), 0, metrics_path=None)
  quiet(1, STATE, metrics())
  quiet.close()
  assert not path.exists()


def test_progress_hook_moves_the_bar_every_step():
  bar = FakeBar()
  progress = ProgressHook(bar)
  assert (progress.every, progress.at_end) == (1, True)
  for step in range(1, 4):
    progress(step, STATE, {})
  progress.close()
  assert bar.updates == 3 and bar.closed


def fake_render(calls):
  """A generator stand-in: clip i of a call is a constant (i + 1) / 100, [N, 64, 1]."""

  def render(params, z, ids):
    assert params == "ema"
    calls.append((np.asarray(z), np.asarray(ids)))
    return jnp.asarray(np.arange(1, z.shape[0] + 1)[:, None, None] / 100 * np.ones((1, 64, 1)))

  return render


def test_preview_hook_writes_wavs_a_grid_and_tensorboard(tmp_path):
  calls, tb = [], FakeTensorBoard()
  z, ids = jnp.ones((4, 3)), jnp.array([0, 0, 1, 1], jnp.int32)
  out = tmp_path / "previews"
  real = np.full((2, 64, 1), 0.5, np.float32)  # one real clip per row
  hook = PreviewHook(
    5,
    fake_render(calls),
    z,
    ids,
    ["kick", "snare"],
    8000,
    out_dir=str(out),
    tensorboard=tb,
    real=real,
  )
  assert (hook.every, hook.at_end, hook.due(10)) == (5, True, True)
  assert hook(10, STATE, {"d/loss": jnp.float32(0.25)}) is None
  np.testing.assert_array_equal(calls[0][1], [0, 0, 1, 1])
  folder = out / "step_0000010"
  assert sorted(os.listdir(folder)) == [
    "grid.png",
    "kick_0.wav",
    "kick_1.wav",
    "report.html",
    "snare_0.wav",
    "snare_1.wav",
  ]  # no curves.png: the run folder has no metrics.jsonl yet
  page = (folder / "report.html").read_text()
  labels = re.findall(r'class="label">([^<]*)<', page)
  assert labels == ["kick: generated", "kick: real", "snare: generated", "snare: real"]
  assert page.count("<audio") == 6 and "<td>d/loss</td><td>0.25</td>" in page
  audio, sr = sf.read(folder / "snare_0.wav", dtype="float32")
  assert sr == 8000 and audio.shape == (64,) and np.allclose(audio, 0.03, atol=1e-4)
  kinds = [(c[0], c[1], c[2]) for c in tb.calls]
  assert kinds == [
    ("audio", 10, "preview/kick"),
    ("audio", 10, "preview/snare"),
    ("image", 10, "preview/spectrograms"),
  ]
  assert np.allclose(tb.calls[1][3], 0.03) and tb.calls[1][4] == 8000  # the first snare clip
  assert tb.calls[2][3] == str(folder / "grid.png")


def test_preview_hook_renders_but_writes_nothing_on_other_processes(tmp_path):
  calls = []
  hook = PreviewHook(
    1, fake_render(calls), jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), ["all"], 8000, out_dir=None
  )
  hook(1, STATE, {})
  assert len(calls) == 1 and os.listdir(tmp_path) == []


def test_eval_hook_scores_fixed_clips_in_chunks_and_reports(monkeypatch, tmp_path):
  monkeypatch.setattr(hooks.time, "time", lambda: 7.0)
  calls, scored, lines, tb = [], [], [], FakeTensorBoard()
  path = str(tmp_path / "metrics.jsonl")
  n, clips = 2 * EVAL_CHUNK, EVAL_CHUNK + 3
  ids = (np.arange(n) % 3).astype(np.int32)

  def score(audio, style_ids):
    scored.append((audio, style_ids))
    return {"eval/fd": 0.5, "eval/style_acc": 0.123456}

  hook = EvalHook(
    3,
    fake_render(calls),
    score,
    jnp.zeros((n, 4)),
    ids,
    clips,
    metrics_path=path,
    tensorboard=tb,
    log=lines.append,
  )
  assert (hook.every, hook.at_end, hook.due(6), hook.due(7)) == (3, True, True, False)
  assert hook(6, STATE, metrics()) is None
  assert [c[0].shape for c in calls] == [(EVAL_CHUNK, 4)] * 2  # one compiled shape
  np.testing.assert_array_equal(calls[1][1], ids[EVAL_CHUNK:])
  audio, style_ids = scored[0]
  assert audio.shape == (clips, 64, 1)
  np.testing.assert_array_equal(style_ids, ids[:clips])
  assert records(path) == [{"step": 6, "time": 7.0, "eval/fd": 0.5, "eval/style_acc": 0.123456}]
  assert tb.calls == [("scalars", 6, {"eval/fd": 0.5, "eval/style_acc": 0.123456})]
  assert lines == ["step 6: fd 0.5, style_acc 0.1235"]


def test_eval_hook_evaluates_the_untrained_generator_of_a_fresh_run(tmp_path):
  calls, scored = [], []
  hook = EvalHook(
    2,
    fake_render(calls),
    lambda audio, ids: scored.append(ids) or {"eval/fd": 1.0},
    jnp.zeros((EVAL_CHUNK, 4)),
    None,  # unconditional: style ids are zeros, and none are scored
    5,
    metrics_path=None,
    log=lambda _: None,
  )
  hook.start(3, STATE)  # a resumed run: nothing
  assert calls == []
  hook.start(0, STATE)
  np.testing.assert_array_equal(calls[0][1], np.zeros(EVAL_CHUNK))
  assert scored == [None] and os.listdir(tmp_path) == []


# -- Saving ----------------------------------------------------------------------------------------


def test_save_hook_saves_the_state_and_metadata_of_now(tmp_path):
  ckpt = FakeCheckpointer()
  guard = FiniteGuard(str(tmp_path), None, SHARDING)
  position = [0]
  hook = SaveHook(
    4,
    ckpt,
    guard,
    tree=lambda state: {"ema": state.ema_params},
    metadata=lambda: {"loader": position[0]},
  )
  assert (hook.every, hook.at_end, hook.due(8), hook.due(9)) == (4, True, True, False)
  position[0] = 8
  assert hook(8, STATE, metrics()) is None
  assert ckpt.saved == [(8, {"ema": "ema"}, {"loader": 8})] and guard.last_good == 8
  hook.close()
  assert ckpt.closed


def test_save_hook_never_saves_a_bad_step(tmp_path):
  ckpt = FakeCheckpointer()
  guard = bad_guard(tmp_path, last_good=2)
  hook = SaveHook(1, ckpt, guard, tree=lambda s: s, metadata=dict)
  with pytest.raises(NonFiniteError, match="step 3: .* the last good checkpoint, step 2, is kept"):
    hook(4, STATE, metrics())
  assert ckpt.saved == [] and guard.last_good == 2


def test_eval_hook_records_the_training_cpu_minutes_it_was_taken_at(tmp_path, monkeypatch):
  cpu = types.SimpleNamespace(now=100.0)
  monkeypatch.setattr(time, "process_time", lambda: cpu.now)
  budget = Budget(wall_minutes=0, cpu_minutes=0)  # no limit: the clock still runs
  cpu.now += 60
  with budget.paused():
    cpu.now += 30  # a preview: left out
  cpu.now += 60
  path = str(tmp_path / "metrics.jsonl")
  hook = EvalHook(
    1,
    fake_render([]),
    lambda audio, ids: {"eval/fd": 1.0},
    jnp.zeros((EVAL_CHUNK, 4)),
    None,
    4,
    metrics_path=path,
    log=lambda _: None,
    cpu_minutes=budget.cpu_minutes,
  )
  hook(5, STATE, metrics())
  assert records(path)[0]["cpu_minutes"] == 2.0  # 60 + 60 s
  assert not budget.spent() and str(budget) == ""
