"""lm_jax/training/losses.py: the one loss, against its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.training import losses


def _batch(seed=0, B=3, T=5, V=7):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  logits = jax.random.normal(k1, (B, T, V)) * 3
  targets = jax.random.randint(k2, (B, T), 0, V)
  weights = (jax.random.uniform(k3, (B, T)) < 0.6).astype(jnp.float32)
  return logits, targets, weights


def _nats(logits, targets):
  logits = np.asarray(logits, np.float64)
  lse = np.log(np.exp(logits).sum(-1))
  picked = np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
  return lse - picked, lse


def test_unweighted_is_the_mean_cross_entropy():
  logits, targets, _ = _batch()
  nats, _ = _nats(logits, targets)
  assert float(losses.cross_entropy(logits, targets)) == pytest.approx(
      nats.mean(), rel=1e-6)


def test_weights_count_only_their_positions():
  logits, targets, weights = _batch(1)
  nats, _ = _nats(logits, targets)
  w = np.asarray(weights)
  want = (nats * w).sum() / w.sum()
  assert float(losses.cross_entropy(logits, targets, weights)) == (
      pytest.approx(want, rel=1e-6))
  # A position of weight 0 may hold any target: it changes nothing.
  other = jnp.where(weights > 0, targets, (targets + 1) % logits.shape[-1])
  assert float(losses.cross_entropy(logits, other, weights)) == (
      pytest.approx(want, rel=1e-6))


def test_fractional_weights_are_a_weighted_mean():
  logits, targets, _ = _batch(2)
  weights = jnp.linspace(0.5, 4.0, targets.size).reshape(targets.shape)
  nats, _ = _nats(logits, targets)
  w = np.asarray(weights, np.float64)
  assert float(losses.cross_entropy(logits, targets, weights)) == (
      pytest.approx((nats * w).sum() / w.sum(), rel=1e-5))


def test_all_zero_weights_give_zero_not_nan():
  logits, targets, _ = _batch(3)
  loss = losses.cross_entropy(logits, targets, jnp.zeros(targets.shape))
  assert float(loss) == 0.0


def test_z_loss_adds_the_weighted_mean_square_log_normaliser():
  logits, targets, weights = _batch(4)
  nats, lse = _nats(logits, targets)
  w = np.asarray(weights)
  want = (nats * w).sum() / w.sum() + 1e-2 * (lse**2 * w).sum() / w.sum()
  assert float(losses.cross_entropy(logits, targets, weights, 1e-2)) == (
      pytest.approx(want, rel=1e-5))
  plain = (nats.mean() + 1e-2 * (lse**2).mean())
  assert float(losses.cross_entropy(logits, targets, z_loss=1e-2)) == (
      pytest.approx(plain, rel=1e-5))


def test_computed_in_float32_from_bfloat16_logits():
  logits, targets, _ = _batch(5)
  low = logits.astype(jnp.bfloat16)
  loss = losses.cross_entropy(low, targets)
  assert loss.dtype == jnp.float32
  nats, _ = _nats(low.astype(jnp.float32), targets)
  assert float(loss) == pytest.approx(nats.mean(), rel=1e-6)


def test_sums_over_batches_give_the_whole_mean():
  logits, targets, weights = _batch(6, B=4)
  parts = [losses.loss_sums(logits[i:i + 2], targets[i:i + 2],
                            weights[i:i + 2]) for i in (0, 2)]
  total = sum(float(p.nats) for p in parts) / sum(float(p.weight)
                                                   for p in parts)
  assert total == pytest.approx(
      float(losses.cross_entropy(logits, targets, weights)), rel=1e-6)
  plain = losses.loss_sums(logits, targets)
  assert float(plain.weight) == targets.size
