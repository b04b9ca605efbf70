import jax
import numpy as np
import pytest

from lm_jax.data import windows


def test_batch_is_shifted_by_one():
  tokens = jax.numpy.arange(1000)
  x, y = windows.get_batch(tokens, jax.random.key(0), 8, 16)
  assert x.shape == y.shape == (8, 16)
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
  np.testing.assert_array_equal(y - x, 1)  # consecutive tokens


def test_batches_are_deterministic():
  tokens = jax.numpy.arange(1000)
  a = windows.get_batch(tokens, jax.random.key(3), 4, 8)
  b = windows.get_batch(tokens, jax.random.key(3), 4, 8)
  c = windows.get_batch(tokens, jax.random.key(4), 4, 8)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


def test_batches_stay_in_bounds():
  tokens = jax.numpy.arange(20)
  x, y = windows.get_batch(tokens, jax.random.key(0), 256, 19)
  assert int(y.max()) == 19 and int(x.min()) == 0


def test_eval_batches_fixed_and_disjoint():
  tokens = np.arange(1000)
  x, y = windows.eval_batches(tokens, batch_size=4, seq_len=10, num_tokens=100)
  assert x.shape == (2, 4, 10)  # 100 tokens -> 2 batches of 4 x 10
  flat = x.reshape(-1, 10)
  np.testing.assert_array_equal(flat[:, 0], np.arange(8) * 10)
  np.testing.assert_array_equal(y, x + 1)
  # Capped by the text: 1000 tokens hold 99 windows of 10 -> 24 batches.
  assert windows.eval_batches(tokens, 4, 10, 10**9)[0].shape == (24, 4, 10)
  with pytest.raises(ValueError):
    windows.eval_batches(np.arange(30), 4, 10, 100)
