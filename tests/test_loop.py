"""The training loop over a fake step: when hooks run, how they stop it, and its device waits."""

import itertools
import os
import signal
import time

import jax
import jax.numpy as jnp
import pytest

from wavegan.errors import NonFiniteError
from wavegan.training.hooks import (
  Budget,
  FiniteGuard,
  Hook,
  InterruptHook,
  SaveHook,
  StopFlag,
  StopHook,
)
from wavegan.training.loop import run_loop

SHARDING = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def counting_step(bad_from=None):
  """A step function on an int state: metrics d/loss = the new step (NaN from `bad_from` on)."""

  def step_fn(state, real, labels):
    state += 1
    loss = jnp.float32(float("nan") if bad_from is not None and state >= bad_from else state)
    return state, {"d/loss": loss, "g/loss": jnp.float32(0.0)}

  return step_fn


BATCHES = itertools.repeat((None, None))


class Recorder(Hook):
  """Notes every call in `events` as (name, step); returns `stop_at`'s reason at that step."""

  def __init__(self, name, events, every=1, at_end=True, stop_at=None):
    self.name, self.events, self.every, self.at_end, self.stop_at = (
      name,
      events,
      every,
      at_end,
      stop_at,
    )

  def start(self, step, state):
    self.events.append((f"{self.name}.start", step))

  def __call__(self, step, state, metrics):
    assert state == step  # the state after this step
    self.events.append((self.name, step))
    return "enough" if step == self.stop_at else None

  def close(self):
    self.events.append((f"{self.name}.close", None))


def guard(tmp_path):
  return FiniteGuard(str(tmp_path), None, SHARDING)


def calls(events, name):
  return [step for n, step in events if n == name]


def test_hooks_run_when_due_and_after_the_last_step(tmp_path):
  events = []
  hooks = [
    Recorder("a", events, every=3),
    Recorder("b", events, every=4),
    Recorder("c", events, every=1, at_end=False),
  ]
  state = run_loop(counting_step(), 2, BATCHES, hooks, guard(tmp_path), step=2, total=10)
  assert state == 10
  assert events[:3] == [("a.start", 2), ("b.start", 2), ("c.start", 2)]
  assert events[-3:] == [("c.close", None), ("b.close", None), ("a.close", None)]
  assert calls(events, "a") == [3, 6, 9, 10]
  assert calls(events, "b") == [4, 8, 10]
  assert calls(events, "c") == list(range(3, 10))  # not after the last step
  assert events[3:6] == [("a", 3), ("c", 3), ("b", 4)]  # in list order within a step


def test_a_stop_reason_makes_the_step_the_last(tmp_path):
  events = []
  hooks = [
    Recorder("before", events, every=100),
    Recorder("stopper", events, stop_at=5),
    Recorder("after", events, every=100),
    Recorder("not_at_end", events, at_end=False),
  ]
  assert run_loop(counting_step(), 0, BATCHES, hooks, guard(tmp_path), step=0, total=50) == 5
  assert calls(events, "before") == []  # it ran before the reason came
  assert calls(events, "after") == [5]  # as after the last step
  assert calls(events, "not_at_end") == [1, 2, 3, 4]


def test_nothing_runs_when_the_run_is_done_and_hooks_close_on_errors(tmp_path):
  events = []
  assert (
    run_loop(counting_step(), 4, BATCHES, [Recorder("a", events)], guard(tmp_path), step=4, total=4)
    == 4
  )
  assert events == [("a.start", 4), ("a.close", None)]

  class Failing(Recorder):
    def __call__(self, step, state, metrics):
      raise RuntimeError("disk on fire")

  events.clear()
  hooks = [Recorder("a", events), Failing("f", events)]
  with pytest.raises(RuntimeError, match="disk on fire"):
    run_loop(counting_step(), 0, BATCHES, hooks, guard(tmp_path), step=0, total=4)
  assert events == [("a.start", 0), ("f.start", 0), ("a", 1), ("f.close", None), ("a.close", None)]


def test_every_step_is_watched_on_the_device_and_waited_for_every_eight(tmp_path):
  """No hook reads a metric for 20 steps: the loop waits on the device only at steps 8 and 16
  (the stop hook), and step 11's NaN, noted on the device, stops the run at step 16."""
  waits = []

  class CountingGuard(FiniteGuard):
    def check(self, metrics):
      waits.append(int(metrics["d/loss"]) if jnp.isfinite(metrics["d/loss"]) else "nan")
      super().check(metrics)

  g = CountingGuard(str(tmp_path), None, SHARDING)
  hooks = [StopHook(Budget(0, 0), g, print)]
  assert run_loop(counting_step(), 0, BATCHES, hooks, g, step=0, total=10) == 10
  assert waits == [8]
  waits.clear()
  with pytest.raises(NonFiniteError, match="^step 11: .*no checkpoint was saved"):
    run_loop(counting_step(bad_from=11), 0, BATCHES, hooks, g, step=0, total=20)
  assert waits == [8, "nan"]


def test_the_budget_finishes_the_run_as_at_its_last_step(monkeypatch, tmp_path):
  now = [0.0]
  monkeypatch.setattr(time, "perf_counter", lambda: now[0])
  events, lines = [], []

  def step_fn(state, real, labels):
    now[0] += 25.0  # seconds per step: a one-minute budget is spent at step 3
    return counting_step()(state, real, labels)

  g = guard(tmp_path)
  hooks = [
    StopHook(Budget(wall_minutes=1.0, cpu_minutes=0), g, lines.append),
    Recorder("preview", events, every=100),
  ]
  assert run_loop(step_fn, 0, BATCHES, hooks, g, step=0, total=100) == 3
  assert lines == ["\ntraining time limit reached at step 3 (1.2 min wall)"]
  assert calls(events, "preview") == [3]


class FakeCheckpointer:
  def __init__(self):
    self.saved = []

  def save(self, step, tree, metadata):
    self.saved.append(step)

  def close(self):
    pass


def test_ctrl_c_saves_the_step_just_done_and_stops(tmp_path):
  """A Ctrl-C during step 3 (here: from a hook) lets step 3's hooks finish, saves step 3 and
  raises; the signal handlers are restored."""
  before = signal.getsignal(signal.SIGINT)
  events, ckpt = [], FakeCheckpointer()
  g = guard(tmp_path)
  save = SaveHook(2, ckpt, g, tree=lambda s: s, metadata=dict)

  class CtrlC(Recorder):
    def __call__(self, step, state, metrics):
      if step == 3:
        os.kill(os.getpid(), signal.SIGINT)
      return super().__call__(step, state, metrics)

  hooks = [
    CtrlC("ctrl_c", events),
    Recorder("later", events),
    save,
    InterruptHook(save, str(tmp_path), print),
  ]
  with pytest.raises(KeyboardInterrupt, match="training stopped at step 3"):
    run_loop(counting_step(), 0, BATCHES, hooks, g, step=0, total=10)
  assert calls(events, "later") == [1, 2, 3]
  assert ckpt.saved == [2, 3] and g.last_good == 3
  assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_at_the_last_step_ends_the_run_normally(tmp_path):
  ckpt, flag = FakeCheckpointer(), StopFlag()
  g = guard(tmp_path)
  save = SaveHook(2, ckpt, g, tree=lambda s: s, metadata=dict)

  class Request(Hook):
    def __call__(self, step, state, metrics):
      flag.requested = step == 4

  hooks = [Request(), save, InterruptHook(save, str(tmp_path), print, flag)]
  assert run_loop(counting_step(), 0, BATCHES, hooks, g, step=0, total=4) == 4
  assert ckpt.saved == [2, 4]
