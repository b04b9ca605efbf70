"""The loop (lm_jax/loop/trainer.py): its schedule of chunks and periodic
actions, and the actions run for every member of a stepper, without
training (the steppers are fakes). (When an action is due and the
divergence check: tests/loop/test_actions.py.)"""

import json
import time
import types

import ml_collections
import numpy as np
import pytest

from lm_jax.loop import preemption, trainer
from lm_jax.loop.clock import Clock, Meter
from lm_jax.loop.setup import DIVERGED_FILE, Member
from lm_jax.tasks.base import NEXT_TOKEN_METRIC

from loop.conftest import Mngr, Recorder, State


class Log:
  def __init__(self):
    self.records, self.texts = [], []

  def write(self, **record):
    self.records.append(record)

  def text(self, step, name, text):
    self.texts.append((step, name))


def _train(num_steps=20, steps_per_call=4, **train):
  return ml_collections.ConfigDict(dict(dict(
      num_steps=num_steps, steps_per_call=steps_per_call, batch_size=2,
      seq_len=3, log_every=4, eval_every=8, skip_nonfinite=False,
      learning_rate=1e-3, warmup_steps=0, min_lr_ratio=0.1,
      schedule="cosine"), **train))


class Stepper:
  """Members that only count steps; member i's loss becomes NaN from
  step `nan_from[i]` on (None: never)."""
  compiling, evaluating = "compiling the fake step", "evaluating the fakes"
  share, compile_s = 1.0, 0.0

  def __init__(self, tmp_path, members=1, start=0, nan_from=(), **train):
    self.config = ml_collections.ConfigDict(dict(train=_train(**train)))
    self.workdir, self.step, self.calls = tmp_path, start, []
    self.nan_from = {i: s for i, s in enumerate(nan_from) if s is not None}
    self.members = [Member(f"m{i}", self.config, tmp_path / f"m{i}", Mngr(),
                           Log(), Clock(time.perf_counter()))
                    for i in range(members)]
    for m in self.members:
      m.workdir.mkdir()
    self.task = types.SimpleNamespace(
        evaluate=self._evaluate, metric=lambda config: NEXT_TOKEN_METRIC)
    self.loaded = self.model = None

  def advance(self, count, dispatched=None, clock=None):
    assert clock is None  # step-clocked fakes
    self.calls.append(count)
    steps = np.arange(self.step + 1, self.step + count + 1)
    self.step += count
    loss = np.stack([np.where(steps >= self.nan_from.get(i, np.inf),
                              np.nan, 1.0 + i) for i in
                     range(len(self.members))])
    return {"loss": loss, "grad_norm": np.ones_like(loss)}

  def member_state(self, i):
    return State(self.step, {"w": np.ones(2)},
                 types.SimpleNamespace(total_notfinite=np.int32(0)))

  def per_member(self, fn):
    return np.asarray([fn(self.member_state(i))
                       for i in range(len(self.members))])

  def _evaluate(self, params, model, loaded, step, config):
    return {"step": step, "val_loss": 2.0}, [f"eval step {step}"], {
        "sample": "text"}


def test_chunks_stop_where_an_action_is_due(tmp_path, capsys):
  seen = []
  stepper = Stepper(tmp_path)
  trainer.train_loop(stepper, [Recorder(6, seen), Recorder(10, seen)],
                     Meter(), clock=Clock(time.perf_counter()))
  # Whole calls of 4, cut short at 6, 10, 12, 18 and 20.
  assert stepper.calls == [4, 2, 4, 2, 4, 2, 2]
  assert seen == [(6, 6), (10, 10), (6, 12), (6, 18), (6, 20), (10, 20)]
  assert "done: step 20/20" in capsys.readouterr().out


def test_an_every_chunk_action_runs_after_each_call(tmp_path):
  seen = []
  stepper = Stepper(tmp_path, num_steps=9)
  trainer.train_loop(stepper, [Recorder(0, seen)], Meter())
  assert stepper.calls == [4, 4, 1] and [s for _, s in seen] == [4, 8, 9]


def test_stop_at_and_a_resumed_start(tmp_path):
  seen = []
  stepper = Stepper(tmp_path, start=8)
  trainer.train_loop(stepper, [Recorder(5, seen)], Meter(), stop_at=13)
  assert stepper.calls == [2, 3] and seen == [(5, 10), (5, 13)]


def test_a_complete_run_trains_nothing(tmp_path):
  stepper = Stepper(tmp_path, start=20)
  trainer.train_loop(stepper, [], Meter())
  assert stepper.calls == []


def _loop(stepper, report=None, stop=None):
  meter = Meter()
  stop = stop or types.SimpleNamespace(requested=False)
  trainer.train_loop(stepper, trainer.actions_for(
      stepper.config.train, meter, stop, report), meter)


def test_a_lone_run_logs_evaluates_and_saves_its_member(tmp_path, capsys):
  stepper = Stepper(tmp_path, num_steps=8)
  _loop(stepper)
  (m,) = stepper.members
  assert [r["step"] for r in m.log.records] == [4, 8, 8]
  assert m.log.records[0]["loss"] == 1.0 and m.evaluated["val_loss"] == 2.0
  assert m.mngr.saved == [8] and m.log.texts == [(8, "sample")]
  out = capsys.readouterr().out
  assert "step 4/8 | loss 1.0000" in out
  assert "eval step 8 | best step 8\n" in out and "text" in out


def test_a_population_runs_the_actions_for_each_member(tmp_path, capsys):
  reported = []
  stepper = Stepper(tmp_path, members=2, num_steps=8)
  _loop(stepper, report=lambda *a: reported.append(a))
  # One progress line per log, with every member's record.
  assert [(s, [r["loss"] for r in rs]) for s, rs, _ in reported] == [
      (4, [1.0, 2.0]), (8, [1.0, 2.0])]
  for m in stepper.members:
    assert [r["step"] for r in m.log.records] == [4, 8, 8]
    assert m.mngr.saved == [8] and m.evaluated["step"] == 8
  out = capsys.readouterr().out
  assert ("evaluating the fakes ...\n  m0: eval step 8\n"
          "  m1: eval step 8\n") in out
  assert "step 4/8" not in out and "text" not in out  # the report's lines


def test_a_diverged_member_stops_alone(tmp_path, capsys):
  stepper = Stepper(tmp_path, members=2, num_steps=16, nan_from=(None, 6))
  _loop(stepper, report=lambda *a: None)
  ok, bad = stepper.members
  assert bad.diverged_at == 6 and ok.diverged_at is None
  assert json.loads((bad.workdir / DIVERGED_FILE).read_text()) == {"step": 6}
  assert "member m1 diverged at step 6 (the loss is not finite)" in (
      capsys.readouterr().out)
  assert ok.mngr.saved == [8, 16] and bad.mngr.saved == []
  # Its train records go on (NaN), as the other members' do.
  assert [r["step"] for r in bad.log.records] == [4, 8, 12, 16]
  assert np.isnan(bad.log.records[-1]["loss"])


def test_a_signal_saves_every_live_member_and_stops(tmp_path):
  stepper = Stepper(tmp_path, members=3, num_steps=16, nan_from=(None, 2))
  stepper.members[2].mngr = Mngr(latest=4)  # saved at the step already
  stop = types.SimpleNamespace(requested=True, signum=15)
  with pytest.raises(preemption.Interrupted) as e:
    _loop(stepper, report=lambda *a: None, stop=stop)
  assert e.value.step == 4 and e.value.workdir == tmp_path
  assert [m.mngr.saved for m in stepper.members] == [[4], [], [4]]


