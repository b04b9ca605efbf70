"""The one loss every task trains and evaluates with.

A weighted next-token cross-entropy in float32: each target position has a
weight (None: every position counts 1; pairs weigh PAD targets 0), and the
loss is the weighted mean over positions, in nats. The z-loss option adds
z_loss x the same weighted mean of logsumexp(logits)^2 (PaLM): it pulls the
softmax normaliser towards 1, so that logits cannot drift upwards together.
Evaluation adds up `loss_sums` over batches (z-loss off: it reports the
cross-entropy alone).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LossSums(NamedTuple):
  """Weighted sums over a batch's target positions."""
  nats: jax.Array  # sum of weight x cross-entropy
  weight: jax.Array  # sum of the weights: the targets counted


def token_nats(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy (nats) of each target (...) under logits (..., V), in
  float32 whatever the logits' dtype."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets)


def _mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return values.mean()
  # An all-zero batch (every target PAD) counts 1: a loss of 0, not NaN.
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  weights: jax.Array | None = None, z_loss: float = 0.0
                  ) -> jax.Array:
  """Weighted mean cross-entropy in nats, plus z_loss x the weighted mean
  of logsumexp(logits)^2; z_loss 0 (fixed at trace time) traces no term."""
  if weights is not None:
    weights = weights.astype(jnp.float32)
  loss = _mean(token_nats(logits, targets), weights)
  if z_loss:
    lse = jax.nn.logsumexp(logits.astype(jnp.float32), -1)
    loss = loss + z_loss * _mean(jnp.square(lse), weights)
  return loss


def loss_sums(logits: jax.Array, targets: jax.Array,
              weights: jax.Array | None = None) -> LossSums:
  """The cross-entropy's weighted sum and the weights' sum, to add up over
  the batches of an evaluation."""
  nats = token_nats(logits, targets)
  if weights is None:
    return LossSums(nats.sum(), jnp.float32(nats.size))
  weights = weights.astype(jnp.float32)
  return LossSums((nats * weights).sum(), weights.sum())
