"""lm_jax/loop: the loop's schedule of chunks and periodic actions, and the
divergence check, without training (the train steps are faked)."""

import types

import ml_collections
import numpy as np
import pytest

from lm_jax.loop import actions, trainer
from lm_jax.loop.clock import Meter


class Recorder(actions.Action):
  def __init__(self, every, seen):
    self.every, self.seen = every, seen

  def __call__(self, run, state, step, metrics):
    self.seen.append((self.every, step))


def _run(tmp_path, num_steps=20, steps_per_call=4, start=0):
  train = ml_collections.ConfigDict(dict(
      num_steps=num_steps, steps_per_call=steps_per_call, batch_size=2,
      seq_len=3))
  return types.SimpleNamespace(config=ml_collections.ConfigDict(
      dict(train=train)), state=types.SimpleNamespace(step=start),
      workdir=tmp_path)


@pytest.fixture
def chunks(monkeypatch):
  """Replaces the jitted steps: each chunk only advances the step."""
  calls = []

  def fake(run, state, count, dispatched=None):
    calls.append(count)
    return types.SimpleNamespace(step=state.step + count), {
        "loss": np.zeros(count), "grad_norm": np.zeros(count)}

  monkeypatch.setattr(trainer, "train_chunk", fake)
  return calls


def test_chunks_stop_where_an_action_is_due(chunks, tmp_path, capsys):
  seen = []
  trainer.train_loop(_run(tmp_path), [Recorder(6, seen), Recorder(10, seen)],
                     Meter())
  # Whole calls of 4, cut short at 6, 10, 12, 18 and 20.
  assert chunks == [4, 2, 4, 2, 4, 2, 2]
  assert seen == [(6, 6), (10, 10), (6, 12), (6, 18), (6, 20), (10, 20)]
  assert "done: step 20/20" in capsys.readouterr().out


def test_an_every_chunk_action_runs_after_each_call(chunks, tmp_path):
  seen = []
  trainer.train_loop(_run(tmp_path, num_steps=9), [Recorder(0, seen)],
                     Meter())
  assert chunks == [4, 4, 1] and [s for _, s in seen] == [4, 8, 9]


def test_stop_at_and_a_resumed_start(chunks, tmp_path):
  seen = []
  trainer.train_loop(_run(tmp_path, start=8), [Recorder(5, seen)], Meter(),
                     stop_at=13)
  assert chunks == [2, 3] and seen == [(5, 10), (5, 13)]


def test_a_complete_run_trains_nothing(chunks, tmp_path):
  trainer.train_loop(_run(tmp_path, start=20), [], Meter())
  assert chunks == []


def test_action_schedule():
  every = Recorder(5, [])
  assert every.next_due(0) == 5 and every.next_due(5) == 10
  assert every.due(10, 20) and every.due(13, 13) and not every.due(12, 20)
  always = Recorder(0, [])
  assert always.next_due(7) == float("inf") and always.due(7, 20)


class _Mngr:
  def latest_step(self):
    return 8


def _state(step, params_ok=True):
  params = {"w": np.ones(2) if params_ok else np.array([1.0, np.nan])}
  opt = types.SimpleNamespace(total_notfinite=np.int32(0))
  return types.SimpleNamespace(step=step, params=params, opt_state=opt)


def test_divergence_names_the_step_and_keeps_the_checkpoint():
  metrics = {"loss": np.array([1.0, np.nan, np.nan, 2.0]),
             "grad_norm": np.ones(4)}
  with pytest.raises(actions.NonFiniteLoss, match=(
      "training diverged at step 10: the loss is not finite .* the last "
      r"good checkpoint \(step 8\) is kept")):
    actions.check_finite(_state(12), metrics, _Mngr(), skip_nonfinite=False)
  # Skipped steps are allowed; parameters that went bad are not.
  actions.check_finite(_state(12), metrics, _Mngr(), skip_nonfinite=True)
  with pytest.raises(actions.NonFiniteLoss, match="the parameters are"):
    actions.check_finite(_state(12, params_ok=False),
                         {"loss": np.ones(4), "grad_norm": np.ones(4)},
                         _Mngr(), skip_nonfinite=True)
