"""lm_jax/training/steps.py: the pieces of the jitted steps that need no
model: finiteness, per-step keys, and steps repeated on device."""

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.training import steps


def test_all_finite_sees_any_nan_or_infinity():
  tree = {"a": jnp.ones(3), "b": [jnp.zeros((2, 2))]}
  assert bool(steps.all_finite(tree))
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    assert not bool(steps.all_finite({**tree, "a": jnp.array([1.0, bad])}))


def _bits(key) -> bytes:
  return bytes(np.asarray(jax.random.key_data(key)))


def test_a_step_s_keys_depend_on_the_seed_and_the_step_only():
  data, dropout = map(_bits, steps.step_keys(jax.random.key(0), jnp.int32(5)))
  assert [data, dropout] == [_bits(k) for k in steps.step_keys(
      jax.random.key(0), jnp.int32(5))]
  others = {_bits(steps.step_keys(jax.random.key(0), jnp.int32(s))[0])
            for s in range(5)}
  others.add(_bits(steps.step_keys(jax.random.key(1), jnp.int32(5))[0]))
  assert len(others) == 6 and data not in others and dropout != data


def _count_up(state):
  """A step: the state goes up by one, its metric is the old state."""
  return state + 1, {"seen": state.astype(jnp.float32)}


def test_repeat_steps_with_a_count_stops_early_and_leaves_nans():
  state, metrics = steps.repeat_steps(_count_up, jnp.int32(10), None, 4)
  assert int(state) == 14
  np.testing.assert_array_equal(metrics["seen"], [10, 11, 12, 13])
  state, metrics = steps.repeat_steps(_count_up, jnp.int32(10),
                                      jnp.int32(2), 4)
  assert int(state) == 12
  np.testing.assert_array_equal(metrics["seen"], [10, 11, np.nan, np.nan])
  state, whole = steps.repeat_steps(_count_up, jnp.int32(10), jnp.int32(9), 4)
  assert int(state) == 14  # never past num_steps
  np.testing.assert_array_equal(whole["seen"], [10, 11, 12, 13])
