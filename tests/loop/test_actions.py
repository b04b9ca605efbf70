"""The loop's periodic actions (lm_jax/loop/actions.py): when an action is
due, and the divergence check, without training (the stepper is a fake)."""

import types

import ml_collections
import numpy as np
import pytest

from lm_jax.loop import actions
from lm_jax.loop.setup import Member

from loop.conftest import Mngr, Recorder, State


def test_action_schedule():
  every = Recorder(5, [])
  assert every.next_due(0) == 5 and every.next_due(5) == 10
  assert every.due(10, 20) and every.due(13, 13) and not every.due(12, 20)
  always = Recorder(0, [])
  assert always.next_due(7) == float("inf") and always.due(7, 20)


def _state(step, params_ok=True):
  params = {"w": np.ones(2) if params_ok else np.array([1.0, np.nan])}
  opt = types.SimpleNamespace(total_notfinite=np.int32(0))
  return State(step, params, opt)


def _check(state, metrics, skip_nonfinite):
  """CheckFinite on a lone run of `state` after the chunk of `metrics`."""
  stepper = types.SimpleNamespace(
      members=[Member("run", ml_collections.ConfigDict(dict(train=dict(
          skip_nonfinite=skip_nonfinite))), None, Mngr(latest=8), None,
                      None)],
      per_member=lambda fn: np.asarray([fn(state)]))
  actions.CheckFinite()(stepper, state.step,
                        {k: v[None] for k, v in metrics.items()})


def test_divergence_names_the_step_and_keeps_the_checkpoint():
  metrics = {"loss": np.array([1.0, np.nan, np.nan, 2.0]),
             "grad_norm": np.ones(4)}
  with pytest.raises(actions.NonFiniteLoss, match=(
      "training diverged at step 10: the loss is not finite .* the last "
      r"good checkpoint \(step 8\) is kept")):
    _check(_state(12), metrics, skip_nonfinite=False)
  # Skipped steps are allowed; parameters that went bad are not.
  _check(_state(12), metrics, skip_nonfinite=True)
  with pytest.raises(actions.NonFiniteLoss, match="the parameters are"):
    _check(_state(12, params_ok=False),
           {"loss": np.ones(4), "grad_norm": np.ones(4)},
           skip_nonfinite=True)
