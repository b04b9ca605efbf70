"""Continuous batching: the requests being decoded share one batch.

`lm_jax.generation.sampling.generate` decodes rows that start together and
share one cache length. A server's requests start and end at any time, so
here each request holds a slot: its own decoding state, made by the model's
`initial_state(1)` and stacked with the other slots' along a new leading
axis (S + 1, ...). One decode step picks the next token of every active slot
and feeds it back through `jax.vmap` of the model's one-row `extend`, so
each slot keeps its own cache position (a Transformer's `length` becomes one
number per slot). Requests join between steps (their prompt is prefilled
alone, in chunks of 2^k tokens, so that a handful of compiled shapes serve
every prompt length) and leave between steps. Slot S is scratch: the rows
that pad a step's batch up to its compiled size (1, 2, 4, ...) write there.
A model whose `extend` cannot be vmapped is decoded one slot at a time
(`batched=False`), in the same loop.

Each slot replays `sampling.generate`'s loop: split the key, pick a token
with the slot's options, feed it; when the cache holds `context_length`
tokens and one more must be fed, the last W // 2 are prefilled afresh
(`sampling._keep`). So a request with the same seed and options gets the
tokens `lm-jax-sample` prints, up to the rounding of a batched matrix
product (which can flip a near-tie).

The engine runs in one thread of its own; `submit` is thread-safe and each
request reports its tokens through its `emit` callback.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.generation import sampling

TOP = 5  # alternatives reported with each token


class Token(NamedTuple):
  """One generated token, with the model's log-probabilities (temperature
  1, before any filter): of the token, and of the TOP likeliest."""
  id: int
  logprob: float
  top_ids: tuple[int, ...]
  top_logprobs: tuple[float, ...]


@dataclasses.dataclass(eq=False)
class Request:
  """A prompt to continue; `emit` receives each Token, then None (done).

  `cancelled` (set by the server when the client leaves) frees the slot
  before the next step."""
  prompt: np.ndarray  # (P,) int ids, 1 <= P <= context_length
  options: sampling.SamplingOptions
  seed: int
  emit: Callable[[Token | None], None]
  cancelled: bool = False
  queued_at: float = dataclasses.field(default_factory=time.perf_counter)


class Slots(NamedTuple):
  """Every slot's decoding state, next-token logits and PRNG key."""
  state: Any  # the model's initial_state(1), stacked: (S + 1, ...)
  logits: jax.Array  # (S + 1, V)
  keys: jax.Array  # (S + 1,) PRNG keys


def pick(key: jax.Array, logits: jax.Array, temperature: jax.Array,
         top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """`sampling.sample_logits` for one row (1, V) with options as traced
  values, so that rows with different options share one compiled step.

  Same steps on the same numbers: the same token for the same key
  (tests/test_serve.py checks it against sample_logits).
  """
  V = logits.shape[-1]
  x = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1)
  ordered = jnp.sort(x, axis=-1)[:, ::-1]  # (1, V) descending
  kth = ordered[:, jnp.clip(top_k - 1, 0, V - 1)][:, None]  # (1, 1)
  x = jnp.where((top_k > 0) & (top_k < V) & (x < kth), -jnp.inf, x)
  ordered = jnp.sort(x, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(ordered, axis=-1)
  keep = jnp.cumsum(probs, axis=-1) - probs < top_p
  cutoff = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
  x = jnp.where((top_p < 1) & (x < cutoff), -jnp.inf, x)
  sampled = jax.random.categorical(key, x, axis=-1)
  return jnp.where(temperature > 0, sampled, jnp.argmax(logits, -1))[0]


def _extend_one(params, model, tokens, state):
  """One slot's `extend`: tokens (1, T), state for one row."""
  return model.apply({"params": params}, tokens, state, method=model.extend)


@functools.partial(jax.jit, static_argnames=("model",))
def prefill(params, model, state, tokens):
  """Logits (V,) after `tokens` (1, T) and the state after them."""
  logits, state = _extend_one(params, model, tokens, state)
  return logits[0, -1], state


@functools.partial(jax.jit, donate_argnames=("slots",))
def put(slots: Slots, slot, state, logits, key=None) -> Slots:
  """Slots with one slot's state and logits (and key) replaced."""
  state = jax.tree.map(lambda big, row: big.at[slot].set(row), slots.state,
                       state)
  keys = slots.keys if key is None else slots.keys.at[slot].set(key)
  return Slots(state, slots.logits.at[slot].set(logits), keys)


@functools.partial(jax.jit, static_argnames=("model", "batched"),
                   donate_argnames=("slots",))
def step(params, model, slots: Slots, idx, temperature, top_k, top_p,
         batched: bool = True):
  """One decode step of the slots `idx` (b,): pick, report, feed.

  Returns the new slots, the tokens (b,), their log-probabilities (b,) and
  the TOP alternatives' ids and log-probabilities (b, TOP).
  """
  logits = slots.logits[idx]  # (b, V)
  keys, subs = jnp.moveaxis(jax.vmap(jax.random.split)(slots.keys[idx]), 1, 0)
  tokens = jax.vmap(pick)(subs, logits[:, None], temperature, top_k,
                          top_p).astype(jnp.int32)  # (b,)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  chosen = jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
  top_lp, top_ids = jax.lax.top_k(logp, min(TOP, logp.shape[-1]))
  rows = jax.tree.map(lambda x: x[idx], slots.state)

  def feed(token, state):  # one slot: (), state of one row
    logits, state = _extend_one(params, model, token[None, None], state)
    return logits[0, -1], state

  if batched:
    new_logits, rows = jax.vmap(feed)(tokens, rows)
  else:  # one slot (b = 1), no vmap
    new_logits, row = feed(tokens[0], jax.tree.map(lambda x: x[0], rows))
    new_logits, rows = new_logits[None], jax.tree.map(lambda x: x[None], row)
  state = jax.tree.map(lambda big, new: big.at[idx].set(new), slots.state,
                       rows)
  slots = Slots(state, slots.logits.at[idx].set(new_logits),
                slots.keys.at[idx].set(keys))
  return slots, tokens, chosen, top_ids, top_lp


def chunks(n: int) -> list[int]:
  """n as a sum of powers of two, largest first: prefill call lengths."""
  return [1 << b for b in reversed(range(n.bit_length())) if n >> b & 1]


class Busy(Exception):
  """The queue is full: the server answers 429."""


class _Slot:
  """What the engine's thread knows of an active slot."""

  def __init__(self, request: Request, context: list[int]):
    self.request = request
    self.context = context  # the tokens the cache holds, in order
    self.made = 0  # tokens generated


class Engine:
  """Decodes the submitted requests in batches of up to `max_batch` slots,
  on a thread of its own; at most `max_queue` wait for a slot."""

  def __init__(self, params, model, max_batch: int = 32,
               max_queue: int = 64):
    self.params, self.model = params, model
    self.max_batch, self.max_queue = max_batch, max_queue
    self.window = model.context_length
    self.sizes = [1 << i for i in range(max_batch.bit_length())
                  if 1 << i < max_batch] + [max_batch]
    self.batched = self._vmaps()
    S = max_batch + 1  # slot S - 1 is scratch
    one = model.initial_state(1)
    V = model.vocab_size
    self.slots = Slots(
        jax.tree.map(lambda x: jnp.repeat(x[None], S, axis=0), one),
        jnp.zeros((S, V), jnp.float32), jax.random.split(jax.random.key(0), S))
    self.active: dict[int, _Slot] = {}
    self.queue: collections.deque[Request] = collections.deque()
    self.lock = threading.Condition()
    self.running = True
    self.steps = 0  # decode steps run, and rows in them (for /health)
    self.rows = 0
    self.thread = threading.Thread(target=self._loop, name="lm-jax-engine",
                                   daemon=True)
    self.thread.start()

  def _vmaps(self) -> bool:
    """Whether the model's one-row extend can be vmapped (traced, not run)."""
    one = self.model.initial_state(1)
    two = jax.tree.map(lambda x: jnp.stack([x, x]), one)
    try:
      jax.eval_shape(jax.vmap(lambda t, s: _extend_one(
          self.params, self.model, t[None, None], s)),
          jnp.zeros((2,), jnp.int32), two)
    except Exception:  # noqa: BLE001 (any tracing failure: decode one by one)
      return False
    return True

  def submit(self, request: Request) -> None:
    """Queues `request`; Busy if the queue is full."""
    with self.lock:
      if len(self.queue) >= self.max_queue:
        raise Busy(f"{len(self.queue)} requests are waiting")
      self.queue.append(request)
      self.lock.notify()

  def load(self) -> dict:
    with self.lock:
      return dict(active=len(self.active), queued=len(self.queue),
                  max_batch=self.max_batch, max_queue=self.max_queue,
                  batched=self.batched, steps=self.steps,
                  mean_batch=self.rows / max(1, self.steps))

  def stop(self) -> None:
    with self.lock:
      self.running = False
      self.lock.notify()
    self.thread.join(timeout=10)

  def warm_up(self) -> None:
    """Compiles every step size and prefill length now, not on first use."""
    state = self.model.initial_state(1)
    n = 1
    while n <= (self.window or 256):
      prefill(self.params, self.model, state,
              jnp.zeros((1, n), jnp.int32))[0].block_until_ready()
      n *= 2
    for b in self.sizes if self.batched else [1]:
      done = threading.Event()
      for _ in range(b):
        self.submit(Request(np.zeros(1, np.int32),
                            sampling.SamplingOptions(max_new_tokens=1), 0,
                            lambda t, d=done: t is None and d.set()))
      done.wait()
      while self.load()["active"] or self.load()["queued"]:
        time.sleep(0.01)

  # The engine's thread.

  def _loop(self) -> None:
    while True:
      with self.lock:
        while self.running and not self.queue and not self.active:
          self.lock.wait()
        if not self.running:
          break
        admitted = []
        while self.queue and len(self.active) + len(admitted) < self.max_batch:
          admitted.append(self.queue.popleft())
      for request in admitted:
        if not request.cancelled:
          self._admit(request)
        else:
          request.emit(None)
      self._finish([s for s, a in self.active.items() if a.request.cancelled])
      if self.active:
        self._step()
    for slot in list(self.active.values()):
      slot.request.emit(None)
    for request in self.queue:
      request.emit(None)

  def _free_slot(self) -> int:
    return next(i for i in range(self.max_batch) if i not in self.active)

  def _prefill(self, tokens: list[int]):
    """Logits and state after `tokens`, from an empty state, in 2^k chunks."""
    state, at = self.model.initial_state(1), 0
    for n in chunks(len(tokens)):
      logits, state = prefill(self.params, self.model, state,
                              jnp.asarray([tokens[at:at + n]], jnp.int32))
      at += n
    return logits, state

  def _admit(self, request: Request) -> None:
    slot = self._free_slot()
    prompt = [int(t) for t in request.prompt]
    logits, state = self._prefill(prompt)
    self.slots = put(self.slots, slot, state, logits,
                     jax.random.key(request.seed))
    with self.lock:
      self.active[slot] = _Slot(request, prompt)

  def _finish(self, slots: list[int]) -> None:
    for s in slots:
      with self.lock:
        slot = self.active.pop(s)
      slot.request.emit(None)

  def _step(self) -> None:
    ids = sorted(self.active)
    if not self.batched:
      for s in ids:
        self._run([s], [s])
      return
    size = next(n for n in self.sizes if n >= len(ids))
    self._run(ids, ids + [self.max_batch] * (size - len(ids)))

  def _run(self, ids: list[int], idx: list[int]) -> None:
    """One step of the slots `ids` (padded with scratch to `idx`)."""
    opts = [self.active[s].request.options for s in ids]
    pad = len(idx) - len(ids)
    column = lambda name, kind, fill: jnp.asarray(
        [getattr(o, name) for o in opts] + [fill] * pad, kind)
    self.slots, tokens, chosen, top_ids, top_lp = step(
        self.params, self.model, self.slots, jnp.asarray(idx, jnp.int32),
        column("temperature", jnp.float32, 0.0),
        column("top_k", jnp.int32, 0), column("top_p", jnp.float32, 1.0),
        batched=self.batched)
    tokens, chosen, top_ids, top_lp = jax.device_get(
        (tokens, chosen, top_ids, top_lp))
    self.steps += 1
    self.rows += len(ids)
    done = []
    for row, s in enumerate(ids):
      slot = self.active[s]
      token = int(tokens[row])
      slot.request.emit(Token(token, float(chosen[row]),
                              tuple(int(i) for i in top_ids[row]),
                              tuple(float(p) for p in top_lp[row])))
      slot.made += 1
      if slot.made >= slot.request.options.max_new_tokens:
        done.append(s)
        continue
      W = self.window
      if W is not None and len(slot.context) == W:
        # The cache was full: this step's feed is void; start afresh from
        # the last W // 2 tokens, as sampling._feed slides.
        keep = sampling._keep(W)
        slot.context = slot.context[W - keep + 1:] + [token]
        logits, state = self._prefill(slot.context)
        self.slots = put(self.slots, s, state, logits)
      else:
        slot.context.append(token)
    self._finish(done)
