"""lm_jax/runs/checkpoints.py: what is kept, what comes back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.runs import checkpoints
from lm_jax.training import steps


@pytest.fixture
def state(smoke_config):
  model = make_model(smoke_config.model, 11)
  return steps.create_train_state(model, smoke_config.train,
                                  jax.random.key(0))


def _bumped(state, step):
  return state.replace(step=jnp.int32(step), params=jax.tree.map(
      lambda p: p + step, state.params))


def test_keeps_the_latest_and_the_best_and_restores_them(state, tmp_path):
  mngr = checkpoints.manager(tmp_path)
  for step, val in ((2, 3.0), (4, 1.0), (6, 2.0), (8, None)):
    checkpoints.save(mngr, step, _bumped(state, step), val,
                     {"elapsed_s": float(step)})
  assert sorted(mngr.all_steps()) == [4, 8]  # best (val 1.0) and latest
  assert mngr.best_step() == 4 and mngr.latest_step() == 8
  assert checkpoints.pick_step(mngr) == 4
  assert checkpoints.saved_metadata(mngr, 8) == {"elapsed_s": 8.0}
  step, back = checkpoints.resume(mngr, state)
  assert step == 8 and int(back.step) == 8
  for a, b in zip(jax.tree.leaves(back.params),
                  jax.tree.leaves(_bumped(state, 8).params)):
    np.testing.assert_array_equal(a, b)
  # Sampling reads the parameters alone, through a read-only manager.
  reader = checkpoints.manager(tmp_path, read_only=True)
  params = checkpoints.restore_params(reader, 4, state.params)
  for a, b in zip(jax.tree.leaves(params),
                  jax.tree.leaves(_bumped(state, 4).params)):
    np.testing.assert_array_equal(a, b)


def test_pick_step_names_the_saved_steps(state, tmp_path):
  mngr = checkpoints.manager(tmp_path)
  with pytest.raises(UserError, match="no checkpoint in"):
    checkpoints.pick_step(mngr)
  checkpoints.save(mngr, 3, state)  # not evaluated: the best is the latest
  assert checkpoints.pick_step(mngr) == 3
  with pytest.raises(UserError, match=r"no checkpoint at step 5; saved "
                     r"steps: \[3\]"):
    checkpoints.pick_step(mngr, 5)
