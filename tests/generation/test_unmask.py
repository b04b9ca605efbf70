"""Unmasking (lm_jax/generation/unmask.py): a masked model fills every blank,
in the order and the number of steps asked, greedily or sampled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.generation import sampling, unmask
from lm_jax.special_tokens import MASK_ID

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


def fake_logits(confidence):
  """Logits that put `confidence[t]` of the mass on token 10 + t."""
  T, V = len(confidence), 40
  probs = np.full((T, V), 0.0)
  probs[:, 5:] = ((1 - np.asarray(confidence)) / (V - 6))[:, None]
  probs[np.arange(T), 10 + np.arange(T)] = confidence
  logits = jnp.log(jnp.asarray(probs))
  return lambda x: logits[None]


@pytest.mark.parametrize("num_steps", [1, 7])
@pytest.mark.parametrize("order", unmask.ORDERS)
def test_unmasking_ends_with_no_mask(num_steps, order):
  confidence = [0.9, 0.5, 0.7, 0.3, 0.8, 0.6]
  tokens = jnp.array([5, MASK_ID, MASK_ID, 6, MASK_ID, MASK_ID])
  out = jax.jit(lambda t, k: unmask.unmask_loop(
      fake_logits(confidence), t, k, num_steps, order))(
          tokens, jax.random.key(0))
  assert MASK_ID not in np.asarray(out.tokens)
  np.testing.assert_array_equal(out.tokens, [5, 11, 12, 6, 14, 15])
  revealed = (np.asarray(out.canvases) != MASK_ID).sum(1) - 2
  np.testing.assert_array_equal(
      revealed, np.cumsum(unmask.reveal_counts(jnp.int32(4), num_steps)))
  if order == "confidence" and num_steps == 7:  # 0.8, 0.7, 0.6, then 0.5
    # reveal_counts(4, 7) is [0, 1, 0, 1, 0, 1, 1]
    assert list(np.asarray(out.revealed_at)[[4, 2, 5, 1]]) == [1, 3, 5, 6]
  np.testing.assert_allclose(np.asarray(out.top_probs)[1, 0], 0.5, rtol=1e-5)


def test_unmasking_samples_with_temperature():
  tokens = jnp.full((6,), MASK_ID)
  out = unmask.unmask_loop(fake_logits([0.5] * 6), tokens, jax.random.key(1),
                           3, "random", sampling.SamplingOptions(
                               temperature=1.0))
  assert MASK_ID not in np.asarray(out.tokens)
  assert (np.asarray(out.tokens) >= unmask.FIRST_TEXT_ID).all()
