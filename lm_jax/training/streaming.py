"""Streamed windows: the train steps' batches read on host from the token
ids (an np.memmap of the token cache, lm_jax/data/token_cache.py), a chunk
of steps ahead, so that the training text never sits whole in host or
device memory.

The windows are those the steps would draw on device from the whole
array: `windows.get_batch`'s random starts, drawn from the same keys
(`steps.step_keys` of the seed and step), or `windows.lane_batch`'s lanes
with a carried state. A run streamed and one on device train on the same
batches, and a resumed run on the same batches as an unbroken one.

Why a hand-written sampler and not Grain: the batch of step s is a pure
function of (seed, s), so the iterator's whole state is the step the
checkpoint already holds; Grain's checkpointable iterator state, its
sampler and its worker processes would add a second record of the same
integer and a different order of windows (breaking the runs trained
before). What it would give beyond that, a background read, is one thread
here (`prefetch`).

Several processes: each reads only the rows of the batch its devices hold
(`jax.make_array_from_callback` asks for each local device's slice).
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm_jax.data import windows
from lm_jax.training import parallel, steps


@functools.partial(jax.jit, static_argnames=("count", "num_tokens",
                                             "batch_size", "seq_len"))
def chunk_starts(seed_key: jax.Array, first: jax.Array, *, count: int,
                 num_tokens: int, batch_size: int, seq_len: int) -> jax.Array:
  """The random windows' starts of steps first .. first + count - 1:
  (count, B), as the train steps draw them on device."""
  def starts(step):
    data_key, _ = steps.step_keys(seed_key, step)
    return windows.random_starts(data_key, num_tokens, batch_size, seq_len)
  return jax.vmap(starts)(first + jnp.arange(count, dtype=jnp.int32))


class Stream:
  """The windows of `config.train`'s steps from `tokens`, a chunk of
  `steps_per_call` steps at a time, the next one read in the background
  while the device trains on this one."""

  def __init__(self, tokens: np.ndarray, train: ml_collections.ConfigDict,
               seed_key: jax.Array, mesh: Mesh):
    self.tokens, self.seed_key = tokens, seed_key
    self.batch_size, self.seq_len = train.batch_size, train.seq_len
    self.count, self.lanes = train.steps_per_call, bool(train.carry_state)
    # Windows split by batch rows, as parallel.batch_sharding splits x, y.
    self.sharding = NamedSharding(mesh, P(None, parallel.DATA))
    self.replicated = parallel.replicated(mesh)
    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._next: tuple[int, concurrent.futures.Future] | None = None

  def starts(self, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows' starts of a chunk (K, B) and their resets (K,)."""
    n, b, t = len(self.tokens), self.batch_size, self.seq_len
    if not self.lanes:
      starts = chunk_starts(self.seed_key, jnp.int32(first), count=self.count,
                            num_tokens=n, batch_size=b, seq_len=t)
      return np.asarray(starts), np.zeros(self.count, bool)
    drawn = [windows.lane_starts(n, first + k, b, t)
             for k in range(self.count)]
    return (np.stack([s for s, _ in drawn]),
            np.array([r for _, r in drawn], bool))

  def draw(self, first: int) -> windows.Drawn:
    """The chunk of steps starting at `first`, placed on the devices."""
    starts, reset = self.starts(first)
    shape = (self.count, self.batch_size, self.seq_len + 1)
    data = jax.make_array_from_callback(
        shape, self.sharding,
        lambda index: windows.read_windows(
            self.tokens, starts[tuple(index or ())[:2]], self.seq_len))
    return windows.Drawn(data, jax.device_put(reset, self.replicated),
                         jax.device_put(np.int32(first), self.replicated))

  def chunk(self, first: int) -> windows.Drawn:
    """The chunk starting at `first`: prefetched, or read now."""
    ahead, self._next = self._next, None
    if ahead is not None and ahead[0] == first:
      return ahead[1].result()
    return self.draw(first)

  def prefetch(self, first: int) -> None:
    """Starts reading the chunk at `first` in the background."""
    self._next = (first, self._pool.submit(self.draw, first))
