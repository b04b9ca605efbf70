"""Continuous batching: the requests being decoded share one batch.

`lm_jax.generation.sampling.generate` decodes rows that start together and
share one cache length. A server's requests start and end at any time, so
here each request holds a slot: its own decoding state, made by the model's
`initial_state(1)` and stacked with the other slots' along a new leading
axis (S, ...). One decode step picks the next token of every active slot
and feeds it back through `jax.vmap` of the model's one-row `extend`, so
each slot keeps its own cache position (a Transformer's `length` becomes one
number per slot). Requests join between steps (their prompt is prefilled
alone, in chunks of 2^k tokens, so that a handful of compiled shapes serve
every prompt length) and leave between steps. A step runs on the first
1, 2, 4, ... slots, as many as hold the active requests (a few compiled
sizes); the free slots among them are computed and ignored.
A model whose `extend` cannot be vmapped is decoded one slot at a time
(`batched=False`), in the same loop.

Each slot is a one-row `sampling.Decoding` and goes through
`sampling.generate`'s steps, with its own options as arrays (its
penalties, `sampling.Penalties`, ride in its Decoding): split the key
and sample (`sampling.next_token`), then feed the token
(`sampling.append`); a slot whose window was full is slid afterwards, on
its own (`sampling.slide`), since a slide prefills W // 2 tokens and the
other slots need not wait on it. So a request with the same seed and
options gets the tokens `lm-jax-sample` prints, up to the rounding of a
batched matrix product (which can flip a near-tie).

The engine runs in one thread of its own; `submit` is thread-safe and each
request reports its tokens through its `emit` callback. No request can stop
that thread: a request whose admission fails (its prompt or options cannot
be put into the program) ends alone with `Request.failed` set; a step that
fails ends the requests in it. `begin_stop` lets the requests in flight
finish for a while, then ends the rest with `failed` saying the server
stopped; `alive` says whether the thread still decodes (`/health`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.generation import sampling

TOP = 5  # alternatives reported with each token
STOPPED = ("the server is shutting down; send the request again once it is "
           "back")
log = logging.getLogger(__name__)


class Token(NamedTuple):
  """One generated token, with the model's log-probabilities (temperature
  1, before any filter): of the token, and of the TOP likeliest."""
  id: int
  logprob: float
  top_ids: tuple[int, ...]
  top_logprobs: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Failed:
  """Why a request ended before its tokens were all made."""
  message: str
  stopped: bool = False  # the server stopped (not the request's fault)


class Stopping(Exception):
  """The engine takes no more requests: the server answers 503."""


@dataclasses.dataclass(eq=False)
class Request:
  """A prompt to continue; `emit` receives each Token, then None (done).

  `cancelled` (set by the server when the client leaves) frees the slot
  before the next step; `failed` is set before the final None when the
  request could not be finished."""
  prompt: np.ndarray  # (P,) int ids, 1 <= P <= context_length
  options: sampling.SamplingOptions
  seed: int
  emit: Callable[[Token | None], None]
  cancelled: bool = False
  failed: Failed | None = None


def _set_at_end(event: threading.Event, token: Token | None) -> None:
  """A warm-up request's `emit`: `event` is set once the request ends."""
  if token is None:
    event.set()


def _at(slot):
  """One slot of the stacked rows (S, ...): a one-row Decoding."""
  return lambda x: x[slot]


@functools.partial(jax.jit, static_argnames=("model",))
def prefill(params, model, state, tokens):
  """Logits (V,) after `tokens` (1, T) and the state after them."""
  logits, state = sampling.extend(params, model, tokens, state)
  return logits[0, -1], state


@functools.partial(jax.jit, donate_argnames=("slots",))
def put(slots: sampling.Decoding, slot, row: sampling.Decoding
        ) -> sampling.Decoding:
  """Slots with slot `slot` replaced by `row`."""
  return jax.tree.map(lambda big, one: big.at[slot].set(one), slots, row)


@functools.partial(jax.jit, donate_argnames=("slots",))
def move(slots: sampling.Decoding, src, dst) -> sampling.Decoding:
  """Slots with slot `src` copied into slot `dst`."""
  return jax.tree.map(lambda x: x.at[dst].set(x[src]), slots)


@functools.partial(jax.jit, static_argnames=("model",),
                   donate_argnames=("slots",))
def slide(params, model, slots: sampling.Decoding, slot,
          token) -> sampling.Decoding:
  """Slots with the full window of slot `slot` slid past `token`."""
  row = jax.tree.map(_at(slot), slots)
  row = sampling.slide(params, model, row, jnp.reshape(token, (1,)))
  return put(slots, slot, row)


def empty_slots(model, n: int) -> sampling.Decoding:
  """n slots, each in the model's initial state."""
  one = sampling.begin(model, jnp.zeros((1, 0), jnp.int32),
                       jnp.zeros((1, model.vocab_size), jnp.float32),
                       model.initial_state(1), jax.random.key(0))
  return jax.tree.map(lambda x: jnp.repeat(x[None], n, axis=0), one)


@functools.partial(jax.jit, static_argnames=("model", "n"))
def resize(model, slots: sampling.Decoding, n: int) -> sampling.Decoding:
  """The first n slots, with empty ones added past the current count."""
  have = slots.logits.shape[0]
  if n <= have:
    return jax.tree.map(lambda x: x[:n], slots)
  return jax.tree.map(lambda x, new: jnp.concatenate([x, new]), slots,
                      empty_slots(model, n - have))


def _step_rows(params, model, rows: sampling.Decoding, temperature, top_k,
               top_p, batched: bool, filtering: bool):
  """`step` on rows (b, ...) of their own: sample, report, append."""
  logp = jax.nn.log_softmax(rows.logits[:, 0].astype(jnp.float32), axis=-1)
  if filtering:
    rows, tokens = jax.vmap(sampling.next_token)(rows, temperature, top_k,
                                                 top_p)  # tokens (b, 1)
  else:  # no row filters: the numbers leave the sorts out of the program
    rows, tokens = jax.vmap(sampling.next_token, in_axes=(0, 0, None, None))(
        rows, temperature, 0, 1.0)
  full = sampling.full(model, rows)
  chosen = jnp.take_along_axis(logp, tokens, axis=-1)[:, 0]
  top_lp, top_ids = jax.lax.top_k(logp, min(TOP, logp.shape[-1]))
  feed = functools.partial(sampling.append, params, model)
  if batched:
    rows = jax.vmap(feed)(rows, tokens)
  else:  # one slot (size 1), no vmap
    row = feed(jax.tree.map(_at(0), rows), tokens[0])
    rows = jax.tree.map(lambda x: x[None], row)
  return rows, tokens[:, 0], chosen, top_ids, top_lp, full


@functools.partial(jax.jit, static_argnames=("model", "size", "batched",
                                             "filtering"),
                   donate_argnames=("slots",))
def step(params, model, slots: sampling.Decoding, start, temperature, top_k,
         top_p, size: int, batched: bool = True, filtering: bool = True):
  """One decode step of the slots start .. start + size - 1: sample,
  report, append. Options are (size,) arrays; `filtering` False (no row
  asks for top_k or top_p) leaves the filters' sorts out.

  Returns the new slots, the tokens (size,), their log-probabilities, the
  TOP alternatives' ids and log-probabilities (size, TOP), and which slots
  were full (the caller slides them). When the step covers every slot
  (start 0, size S) XLA updates the donated slots in place; a slice of them
  costs a copy of all (the one-by-one path).
  """
  rows = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size),
                      slots)
  rows, *out = _step_rows(params, model, rows, temperature, top_k, top_p,
                          batched, filtering)
  slots = jax.tree.map(
      lambda big, new: jax.lax.dynamic_update_slice_in_dim(big, new, start, 0),
      slots, rows)
  return slots, *out


def slot_mesh(devices=None) -> jax.sharding.Mesh:
  """The devices (default: all) as one axis "slots" that a step splits."""
  return jax.sharding.Mesh(np.array(devices or jax.devices()), ("slots",))


@functools.partial(jax.jit, static_argnames=("model", "mesh", "filtering"),
                   donate_argnames=("slots",))
def sharded_step(params, model, slots: sampling.Decoding, temperature,
                 top_k, top_p, mesh: jax.sharding.Mesh,
                 filtering: bool = True):
  """`step` of every slot (start 0, size S), the slots split evenly over
  the devices of `mesh`: each device decodes its own S / n rows with no
  exchange between them (the parameters are copied to each). The slots
  and options are split along their first axis (`shard_slots`); the
  outputs too."""
  rows = jax.sharding.PartitionSpec("slots")
  body = functools.partial(_step_rows, batched=True, filtering=filtering,
                           model=model)
  return jax.shard_map(
      lambda p, s, t, k, q: body(p, rows=s, temperature=t, top_k=k, top_p=q),
      mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), rows, rows, rows,
                           rows),
      out_specs=rows, check_vma=False)(params, slots, temperature, top_k,
                                       top_p)


def shard_slots(tree, mesh: jax.sharding.Mesh):
  """`tree`'s arrays split along their first axis over `mesh`'s devices
  (no copy where they already are)."""
  return jax.device_put(tree, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("slots")))


@jax.jit
def _pick(logp, key, temperature, top_k, top_p, penalties):
  """`step`'s sampling and report for one row, from log-probabilities."""
  d = sampling.Decoding(None, logp[None], key, None, jnp.int32(0), penalties)
  d, token = sampling.next_token(d, temperature, top_k, top_p)
  top_lp, top_ids = jax.lax.top_k(logp, min(TOP, logp.shape[-1]))
  return token[0], logp[token[0]], top_ids, top_lp


_pick_rows = jax.jit(jax.vmap(_pick, in_axes=(0, 0, None, None, None, 0)))


def first_tokens(logps: np.ndarray, options: sampling.SamplingOptions,
                 seeds: list[int]) -> list[Token]:
  """The token each request's first step picks (the same key, options and
  sampler as `step`), from the log-probabilities (C, V) after its prompt
  that scoring found (`scoring.Scored.following`): an echo with
  max_tokens 1 needs no prefill of its own. One call for the C rows."""
  C, V = logps.shape
  penalties = jax.tree.map(lambda x: x[:, None],
                           sampling.penalties_of(options, C, V))
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  tokens, chosen, top_ids, top_lp = jax.device_get(_pick_rows(
      jnp.asarray(logps), keys, options.temperature, options.top_k,
      options.top_p, penalties))
  return [Token(int(tokens[r]), float(chosen[r]),
                tuple(int(i) for i in top_ids[r]),
                tuple(float(p) for p in top_lp[r])) for r in range(C)]


def chunks(n: int) -> list[int]:
  """n as a sum of powers of two, largest first: prefill call lengths."""
  return [1 << b for b in reversed(range(n.bit_length())) if n >> b & 1]


class Busy(Exception):
  """The queue is full: the server answers 429."""


class _Slot:
  """What the engine's thread knows of an active slot: its request and its
  options as the step's 32-bit numbers (converted at admission, where a
  value they cannot hold fails this request alone)."""

  def __init__(self, request: Request):
    self.request = request
    self.made = 0  # tokens generated
    o = request.options
    self.options = (np.float32(o.temperature), np.int32(o.top_k),
                    np.float32(o.top_p))
    self.filters = o.top_k > 0 or o.top_p < 1  # the step needs the sorts
    if not (np.isfinite(self.options[0]) and np.isfinite(self.options[2])):
      raise OverflowError("a sampling option is past float32's range")


class Engine:
  """Decodes the submitted requests in batches of up to `max_batch` slots,
  on a thread of its own; at most `max_queue` wait for a slot.

  The active slots are kept at the front (0 .. n - 1): a request that ends
  has its place taken by the last one (`move`). There are as many slots as
  the smallest step size (1, 2, 4, ...) that holds the active requests:
  `resize` grows or shrinks them a power of two at a time, so that a step
  covers them all and updates them in place.

  `devices` > 1 (lm-jax-serve makes one JAX CPU device per core): a step
  of at least that many slots splits them evenly over the first `devices`
  devices (`sharded_step`), each decoding its share on its own core; a
  smaller step (one client) runs on the first device alone, as with
  `devices` 1.
  """

  def __init__(self, params, model, max_batch: int = 32,
               max_queue: int = 64, devices: int = 1):
    self.params, self.model = params, model
    self.devices = max(1, min(devices, len(jax.devices())))
    self.mesh = (slot_mesh(jax.devices()[:self.devices])
                 if self.devices > 1 else None)
    self.params_split = (None if self.mesh is None else jax.device_put(
        params, jax.sharding.NamedSharding(self.mesh,
                                           jax.sharding.PartitionSpec())))
    self.max_batch, self.max_queue = max_batch, max_queue
    self.window = model.context_length
    self.sizes = [1 << i for i in range(max_batch.bit_length())
                  if 1 << i < max_batch] + [max_batch]
    self.batched = self._vmaps()
    if not self.batched:
      self.mesh = None
    self.slots = empty_slots(model, 1)  # as many as the batch size needs
    self.active: list[_Slot] = []  # slot i is self.active[i]
    self.queue: collections.deque[Request] = collections.deque()
    self.lock = threading.Condition()
    self.running = True
    self.deadline: float | None = None  # set by begin_stop
    self.failure: str | None = None  # why the thread ended, if not stopped
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
      jax.eval_shape(jax.vmap(lambda t, s: sampling.extend(
          self.params, self.model, t[None, None], s)),
          jnp.zeros((2,), jnp.int32), two)
    except Exception:  # noqa: BLE001 (any tracing failure: decode one by one)
      return False
    return True

  @property
  def alive(self) -> bool:
    """Whether requests are decoded: the thread runs and is not stopping."""
    return (self.running and self.deadline is None and self.failure is None
            and self.thread.is_alive())

  def submit(self, request: Request) -> None:
    """Queues `request`; Busy if the queue is full, Stopping if the engine
    takes no more."""
    with self.lock:
      if not self.alive:
        raise Stopping(self.failure or STOPPED)
      if len(self.queue) >= self.max_queue:
        raise Busy(f"{len(self.queue)} requests are waiting")
      self.queue.append(request)
      self.lock.notify()

  def load(self) -> dict:
    with self.lock:
      return dict(active=len(self.active), queued=len(self.queue),
                  max_batch=self.max_batch, max_queue=self.max_queue,
                  batched=self.batched, devices=self._split_over(
                      self.max_batch), steps=self.steps,
                  mean_batch=self.rows / max(1, self.steps))

  def begin_stop(self, drain_s: float) -> None:
    """Takes no more requests; those in flight have `drain_s` seconds to
    finish, then end with `failed` (STOPPED). Returns at once."""
    with self.lock:
      if self.deadline is None:
        self.deadline = time.monotonic() + drain_s
      self.lock.notify()

  def stop(self) -> None:
    with self.lock:
      self.running = False
      self.lock.notify()
    self.thread.join(timeout=10)

  def warm_up(self) -> None:
    """Compiles the programs of every step size and prefill length now
    rather than on first use: requests of each batch size, long enough
    for the window to slide."""
    empty = self.model.initial_state(1)
    # A chunk after the first continues a state a jitted call made (a
    # committed array): jit compiles that case apart.
    made = prefill(self.params, self.model, empty,
                   jnp.zeros((1, 1), jnp.int32))[1]
    n = 1
    while n <= (self.window or 256):
      for state in (empty, made):
        prefill(self.params, self.model, state,
                jnp.zeros((1, n), jnp.int32))[0].block_until_ready()
      n *= 2
    if self.batched:  # every resize, up and down
      for n in self.sizes[1:] + self.sizes[-2::-1]:
        self._fit(n)
    length = (self.window or 1) + 2
    for b in self.sizes if self.batched else [1]:
      done = [threading.Event() for _ in range(b)]
      for event in done:
        self.submit(Request(np.zeros(1, np.int32),
                            sampling.SamplingOptions(max_new_tokens=length),
                            0, functools.partial(_set_at_end, event)))
      for event in done:
        event.wait()
      # The requests above ask for no filter; the step with the filters'
      # sorts (a request with top_k or top_p) is compiled on spare slots.
      slots = self._placed(empty_slots(
          self.model, b if self.batched else self.max_batch))
      self._call_step(slots, 0, b, [(np.float32(1), np.int32(1),
                                     np.float32(0.5))] * b, True)

  # The engine's thread.

  def _loop(self) -> None:
    try:
      while self._turn():
        pass
    except Exception as e:  # noqa: BLE001 (a fault of the loop itself)
      self.failure = (f"the decoding thread failed ({type(e).__name__}: "
                      f"{e}); restart the server")
      log.error("%s", self.failure)
    finally:
      with self.lock:
        left = [s.request for s in self.active] + list(self.queue)
        self.active, self.running = [], False
        self.queue.clear()
      self._end(left, Failed(self.failure or STOPPED,
                             stopped=self.failure is None))

  def _turn(self) -> bool:
    """Admits what waits and runs one step; False once the loop must end."""
    with self.lock:
      while (self.running and self.deadline is None and not self.queue
             and not self.active):
        self.lock.wait()
      stopping = self.deadline is not None and (
          time.monotonic() >= self.deadline or not (self.queue or
                                                     self.active))
      if not self.running or stopping:
        return False
      admitted: list[Request] = []
      while self.queue and len(self.active) + len(admitted) < self.max_batch:
        admitted.append(self.queue.popleft())
    self._fit(len(self.active) + len(admitted))
    for request in admitted:
      if request.cancelled:
        request.emit(None)
        continue
      try:
        self._admit(request)
      except Exception as e:  # noqa: BLE001 (this request's fault alone)
        self._end([request], Failed(
            f"this request could not be decoded ({type(e).__name__}: {e})"))
    self._finish([i for i, a in enumerate(self.active)
                  if a.request.cancelled])
    if self.active:
      try:
        self._step()
      except Exception as e:  # noqa: BLE001 (the slots' states are lost)
        with self.lock:
          lost, self.active = [s.request for s in self.active], []
        self.slots = empty_slots(self.model, 1)
        self._fit(0)
        log.error("a decode step failed (%s: %s)", type(e).__name__, e)
        self._end(lost, Failed(f"the decode step failed ({type(e).__name__}"
                               f": {e}); send the request again"))
    return True

  @staticmethod
  def _end(requests: list[Request], why: Failed) -> None:
    for request in requests:
      request.failed = why
      request.emit(None)

  def _prefill(self, tokens: list[int]):
    """Logits and state after `tokens`, from an empty state, in 2^k chunks."""
    state, at = self.model.initial_state(1), 0
    for n in chunks(len(tokens)):
      logits, state = prefill(self.params, self.model, state,
                              jnp.asarray([tokens[at:at + n]], jnp.int32))
      at += n
    return logits, state

  def _admit(self, request: Request) -> None:
    slot = _Slot(request)
    prompt = [int(t) for t in request.prompt]
    logits, state = self._prefill(prompt)
    row = sampling.begin(self.model, np.asarray([prompt], np.int32),
                         logits[None], state, jax.random.key(request.seed),
                         sampling.penalties_of(request.options, 1,
                                               self.model.vocab_size))
    self.slots = put(self.slots, len(self.active),
                     self._placed(row, self.slots.logits.shape[0]))
    with self.lock:
      self.active.append(slot)

  def _finish(self, ended: list[int]) -> None:
    """Frees the slots `ended`; the last active slots move into them."""
    for i in sorted(ended, reverse=True):
      with self.lock:
        last = len(self.active) - 1
        slot = self.active[i]
        self.active[i] = self.active[last]
        self.active.pop()
      if i != last:
        self.slots = move(self.slots, last, i)
      slot.request.emit(None)

  def _fit(self, n: int) -> None:
    """Resizes the slots to the step size that holds n requests (batched)."""
    if not self.batched:
      n = self.max_batch  # one by one: every slot, once
    want = next(s for s in self.sizes if s >= max(1, n))
    have = self.slots.logits.shape[0]
    if have == want:
      return
    while have != want:
      have = min(have * 2, want) if want > have else max(have // 2, want)
      have = next(s for s in self.sizes if s >= have)
      self.slots = resize(self.model, self.slots, have)
    self.slots = self._placed(self.slots)

  def _split_over(self, size: int) -> int:
    """Devices a step of `size` slots is split over (1: the first alone)."""
    if self.mesh is None or size < self.devices or size % self.devices:
      return 1
    return self.devices

  def _placed(self, tree, size: int | None = None):
    """`tree` (slots, or a row to put in them: `size` theirs) where a step
    of the slots runs: split over the devices, or on the first."""
    size = tree.logits.shape[0] if size is None else size
    if self._split_over(size) == 1:
      return jax.device_put(tree, jax.devices()[0])
    assert self.mesh is not None
    if tree.logits.shape[0] == size:
      return shard_slots(tree, self.mesh)
    return jax.device_put(tree, jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec()))  # a row: on each device

  def _params(self, size: int):
    """The parameters on the devices of a step of `size` slots."""
    return self.params if self._split_over(size) == 1 else self.params_split

  def _call_step(self, slots, start: int, size: int, options: list,
                 filtering: bool):
    """`step` (or `sharded_step`) of slots start .. start + size - 1 with
    one (temperature, top_k, top_p) of `options` each."""
    column = lambda i, kind: jnp.asarray([o[i] for o in options], kind)
    temperature, top_k, top_p = (column(0, jnp.float32),
                                 column(1, jnp.int32), column(2, jnp.float32))
    if self._split_over(size) > 1:
      assert self.mesh is not None and start == 0
      return sharded_step(self.params_split, self.model, slots, temperature,
                          top_k, top_p, mesh=self.mesh, filtering=filtering)
    return step(self.params, self.model, slots, start, temperature, top_k,
                top_p, size=size, batched=self.batched, filtering=filtering)

  def _step(self) -> None:
    if self.batched:
      self._fit(len(self.active))
      self._run(0, self.slots.logits.shape[0])
    else:
      for start in range(len(self.active)):
        self._run(start, 1)

  def _run(self, start: int, size: int) -> None:
    """One step of the slots start .. start + size - 1 (some may be free:
    their rows are computed and ignored)."""
    slots = self.active[start:start + size]
    pad = size - len(slots)
    free = (np.float32(0), np.int32(0), np.float32(1))
    self.slots, *out = self._call_step(
        self.slots, start, size, [s.options for s in slots] + [free] * pad,
        any(s.filters for s in slots))
    tokens, chosen, top_ids, top_lp, full = jax.device_get(out)
    self.steps += 1
    self.rows += len(slots)
    done = []
    for row, slot in enumerate(slots):
      token = int(tokens[row])
      slot.request.emit(Token(token, float(chosen[row]),
                              tuple(int(i) for i in top_ids[row]),
                              tuple(float(p) for p in top_lp[row])))
      slot.made += 1
      if slot.made >= slot.request.options.max_new_tokens:
        done.append(start + row)
        continue
      if full[row]:  # the step's append was void: slide instead
        self.slots = slide(self._params(self.slots.logits.shape[0]),
                           self.model, self.slots, start + row, token)
    self._finish(done)
