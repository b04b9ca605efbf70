"""Batching: pure functions from a token array to (inputs, targets) windows.

A window of `seq_len + 1` consecutive tokens gives the inputs `x` (all but
the last) and the targets `y` (all but the first): at every position the
model predicts the next token. These functions run on host (NumPy) or
device (jax.numpy) arrays alike, inside or outside `jax.jit`.

A text too large for the device streams instead (lm_jax/training/
streaming.py): the same windows, their starts drawn as `get_batch` and
`lane_batch` draw them, read on host from the memory-mapped ids
(`read_windows`) and handed to the train steps as `Drawn`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def get_batch(tokens: jax.Array, key: jax.Array, batch_size: int,
              seq_len: int) -> tuple[jax.Array, jax.Array]:
  """Random windows: x (B, T) and y (B, T), y[:, t] == x[:, t + 1].

  The same key gives the same batch, so training data order is a function of
  (seed, step).
  """
  starts = random_starts(key, tokens.shape[0], batch_size, seq_len)  # (B,)
  idx = starts[:, None] + jnp.arange(seq_len + 1)  # (B, T + 1)
  windows = jnp.take(tokens, idx, axis=0)
  return windows[:, :-1], windows[:, 1:]


# The most tokens a training split may hold: window starts are drawn as
# int32 (JAX without x64), so a split of more is refused (tasks/base.py:
# check_splits) rather than overflowing at the first step.
MAX_TOKENS = 2**31 - 1


def random_starts(key: jax.Array, num_tokens: int, batch_size: int,
                  seq_len: int) -> jax.Array:
  """The first token of each of `get_batch`'s windows: (B,) ints."""
  return jax.random.randint(key, (batch_size,), 0, num_tokens - seq_len)


def lane_length(num_tokens: int, batch_size: int) -> int:
  """Tokens per lane in `lane_batch`: (N - 1) // B."""
  return (num_tokens - 1) // batch_size


def lane_windows(num_tokens: int, batch_size: int, seq_len: int) -> int:
  """Windows of `seq_len` tokens per lane in `lane_batch`."""
  return lane_length(num_tokens, batch_size) // seq_len


def lane_batch(tokens: jax.Array, step, batch_size: int, seq_len: int
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Consecutive windows of `batch_size` lanes, for truncated BPTT.

  The N tokens are cut into B contiguous lanes of L = (N - 1) // B tokens;
  lane b starts at token b * L. Step k reads window j = k mod W of every
  lane, W = L // T (`lane_windows`): x[b, t] = tokens[b * L + j * T + t] and
  y[b, t] the token after it, so step k + 1 continues where step k stopped.
  Returns x (B, T), y (B, T) and `reset`, True where j == 0: the lanes have
  wrapped around to their starts and a carried state begins again from
  zero. The last L - W * T (< T) tokens of each lane are never inputs.
  """
  lane_len = lane_length(tokens.shape[0], batch_size)
  j = step % lane_windows(tokens.shape[0], batch_size, seq_len)
  idx = (jnp.arange(batch_size)[:, None] * lane_len + j * seq_len
         + jnp.arange(seq_len + 1))  # (B, T + 1)
  windows = jnp.take(tokens, idx, axis=0)
  return windows[:, :-1], windows[:, 1:], j == 0


def lane_starts(num_tokens: int, step: int, batch_size: int, seq_len: int
                ) -> tuple[np.ndarray, bool]:
  """The first token of each of `lane_batch`'s windows at `step` (B,),
  and its `reset`, on host."""
  lane_len = lane_length(num_tokens, batch_size)
  j = step % lane_windows(num_tokens, batch_size, seq_len)
  return np.arange(batch_size) * lane_len + j * seq_len, j == 0


def read_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int
                 ) -> np.ndarray:
  """tokens[s : s + seq_len + 1] for every start s: (..., T + 1) int32.

  `tokens` may be an np.memmap: only the windows' pages are read.
  """
  idx = starts[..., None] + np.arange(seq_len + 1)
  return np.asarray(tokens[idx], np.int32)


class Drawn(NamedTuple):
  """A chunk of steps' windows, read on host (lm_jax/training/
  streaming.py): what the train steps read in place of the token array."""
  windows: jax.Array  # (K, B, T + 1) int32, step first + k in row k
  reset: jax.Array  # (K,) bool: the lanes wrap around (carried state)
  first: jax.Array  # () int32: the step of windows[0]


def drawn_batch(drawn: Drawn, step) -> tuple[jax.Array, jax.Array,
                                             jax.Array]:
  """x (B, T), y (B, T) and reset of `step` from a Drawn chunk."""
  i = step - drawn.first
  window = drawn.windows[i]  # (B, T + 1)
  return window[:, :-1], window[:, 1:], drawn.reset[i]


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
  windows = tokens[idx].astype(np.int32).reshape(n // batch_size, batch_size,
                                                 seq_len + 1)
  return windows[..., :-1], windows[..., 1:]


def min_tokens(batch_size: int, seq_len: int) -> int:
  """The fewest tokens a text needs for `eval_batches` to fill one batch."""
  return batch_size * seq_len + 1
