"""A run's clocks (lm_jax/loop/clock.py): the wall seconds a checkpoint
holds, evaluations counted apart, and the steps per second since a
restart, on a fake perf_counter."""

import pytest

from lm_jax.loop import clock
from lm_jax.loop.clock import Clock, Meter, StepTimer


@pytest.fixture
def now(monkeypatch):
  """perf_counter() reads now[0]."""
  now = [100.0]
  monkeypatch.setattr(clock.time, "perf_counter", lambda: now[0])
  return now


def test_a_resumed_clock_adds_the_saved_time_and_counts_evaluations(now):
  c = Clock(started=90.0)
  assert c.marks == {"imports": 10.0}
  c.resume({"elapsed_s": 50.0, "eval_s": 5.0})
  assert c.elapsed() == 60.0
  with c.evaluating():
    now[0] = 103.0
    # A checkpoint saved while evaluating counts the evaluation so far.
    assert c.saved() == {"elapsed_s": 63.0, "eval_s": 8.0, "train_s": 0.0}
  now[0] = 104.0
  c.mark("compile")
  assert c.saved() == {"elapsed_s": 64.0, "eval_s": 8.0, "train_s": 0.0}
  assert c.marks == {"imports": 10.0, "compile": 14.0}
  older = Clock(started=100.0)
  older.resume({})  # a checkpoint of older code: nothing spent before
  assert older.saved() == {"elapsed_s": 4.0, "eval_s": 0.0, "train_s": 0.0}


def test_a_meter_counts_steps_per_second_since_its_restart(now):
  meter = Meter(step=10)
  assert meter.rate(10) is None  # no step yet
  now[0] = 102.0
  assert meter.rate(14) == 2.0 and meter.elapsed() == 2.0
  meter.restart(14)
  now[0] = 106.0
  assert meter.rate(16) == 0.5 and meter.elapsed() == 6.0


def test_training_seconds_count_the_first_chunk_at_the_next_chunks_rate():
  timer = StepTimer()
  assert timer.seconds(4, 30.0, first=True) == 0.0  # mostly compiling
  assert timer.seconds(8, 2.0, first=False) == 3.0  # its 4 steps at 0.25 s
  assert timer.seconds(8, 2.0, first=False) == 2.0 and timer.left_over() == 0
  alone = StepTimer(share=0.5)  # members sharing a device: half of each
  alone.seconds(4, 3.0, first=True)
  assert alone.left_over() == 1.5  # no chunk followed: as measured
  restored = Clock(started=0.0)
  restored.resume({"elapsed_s": 9.0, "eval_s": 1.0, "train_s": 6.5})
  assert restored.train_s == 6.5 and restored.saved()["train_s"] == 6.5
