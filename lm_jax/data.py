"""Batching: pure functions from a token array to (inputs, targets) windows.

A window of `seq_len + 1` consecutive tokens gives the inputs `x` (all but
the last) and the targets `y` (all but the first): at every position the
model predicts the next token. These functions run on host (NumPy) or
device (jax.numpy) arrays alike, inside or outside `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def get_batch(tokens: jax.Array, key: jax.Array, batch_size: int,
              seq_len: int) -> tuple[jax.Array, jax.Array]:
  """Random windows: x (B, T) and y (B, T), y[:, t] == x[:, t + 1].

  The same key gives the same batch, so training data order is a function of
  (seed, step).
  """
  starts = jax.random.randint(key, (batch_size,), 0,
                              tokens.shape[0] - seq_len)  # (B,)
  idx = starts[:, None] + jnp.arange(seq_len + 1)  # (B, T + 1)
  windows = jnp.take(tokens, idx, axis=0)
  return windows[:, :-1], windows[:, 1:]


def eval_batches(tokens: np.ndarray, batch_size: int, seq_len: int,
                 num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
  """Fixed, non-overlapping windows from the start of `tokens`.

  Returns x and y of shape (N, B, T) covering about `num_tokens` targets (at
  least one batch, at most what the text holds). The same arrays serve every
  evaluation, so the validation curve carries no sampling noise.
  """
  tokens = np.asarray(tokens)
  available = (len(tokens) - 1) // seq_len  # whole windows in the text
  wanted = max(1, num_tokens // (batch_size * seq_len)) * batch_size
  n = min(wanted, available) // batch_size * batch_size
  if n == 0:
    raise ValueError(f"{len(tokens)} tokens cannot fill one batch of "
                     f"{batch_size} x {seq_len + 1}")
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)  # (n, T+1)
  windows = tokens[idx].reshape(n // batch_size, batch_size, seq_len + 1)
  return windows[..., :-1], windows[..., 1:]


def min_tokens(batch_size: int, seq_len: int) -> int:
  """The fewest tokens a text needs for `eval_batches` to fill one batch."""
  return batch_size * seq_len + 1
