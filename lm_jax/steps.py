"""The optimiser, the loss, and the jitted train and eval steps.

Everything here is a pure function of its arguments: the data batch and the
dropout key of step s are functions of (seed, s), so a run resumed from a
checkpoint continues exactly as if it had never stopped.

With config.train.carry_state (LSTM only) training is truncated
backpropagation through time, as in char-rnn: the batch rows are contiguous
lanes of the text read window after window (`data.lane_batch`), and the
LSTM state at the end of one window starts the next (`CarryTrainState`),
with no gradient flowing back across the boundary.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from lm_jax import data

# With config.train.skip_nonfinite, this many non-finite updates in a row
# mean the run has diverged, not hit a bad batch: the next one is applied,
# its NaN reaches the parameters, and the trainer stops.
MAX_CONSECUTIVE_SKIPS = 10


class TrainState(struct.PyTreeNode):
  """What a checkpoint holds: the step, the parameters, the optimiser state."""
  step: jax.Array
  params: Any
  opt_state: Any
  model: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


class CarryTrainState(TrainState):
  """A TrainState with the LSTM state carried across windows
  (config.train.carry_state, truncated BPTT).

  `carry` is the (c, h) of every layer, each (B, H), where each lane's last
  window ended; row b belongs to lane b. It is part of the checkpoint: a
  resumed run continues every lane from the very state it stopped in,
  exactly as if it had never stopped (restarting the lanes from zero state
  at the right windows would only be close). A subclass rather than an
  optional field, so that a TrainState's checkpoints keep their layout.
  """
  carry: Any


def lr_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to the peak rate, then cosine decay to min_lr_ratio of it."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate,
      warmup_steps=train.warmup_steps,
      decay_steps=max(train.num_steps, train.warmup_steps + 1),
      end_value=train.learning_rate * train.min_lr_ratio)


def make_optimizer(train: ml_collections.ConfigDict
                   ) -> optax.GradientTransformation:
  """AdamW after global-norm clipping; weight decay on matrices only.

  An update whose gradients are not finite is dropped (parameters and
  moments unchanged) and counted, so a NaN never reaches a checkpoint; the
  trainer stops at the first one unless config.train.skip_nonfinite. The
  wrapper is always there so that checkpoints have one layout either way.
  """
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.apply_if_finite(optax.chain(
      optax.clip_by_global_norm(train.grad_clip),
      optax.adamw(lr_schedule(train), b1=train.b1, b2=train.b2,
                  weight_decay=train.weight_decay, mask=decay_mask)),
      max_consecutive_errors=MAX_CONSECUTIVE_SKIPS)


def create_train_state(model: nn.Module, train: ml_collections.ConfigDict,
                       key: jax.Array) -> TrainState:
  """Fresh parameters (from `key`) and optimiser state; with
  train.carry_state, the zero state of every lane."""
  dummy = jnp.zeros((1, train.seq_len), jnp.int32)
  params = jax.jit(model.init)(key, dummy)["params"]
  tx = make_optimizer(train)
  fields = dict(step=jnp.zeros((), jnp.int32), params=params,
                opt_state=tx.init(params), model=model, tx=tx)
  if not train.get("carry_state", False):
    return TrainState(**fields)
  # One buffer per array (initial_state shares one): the state is donated.
  carry = jax.tree.map(jnp.zeros_like, model.initial_state(train.batch_size))
  return CarryTrainState(**fields, carry=carry)


def skipped_updates(state: TrainState) -> int:
  """How many updates were dropped for non-finite gradients, over the run."""
  return int(state.opt_state.total_notfinite)


@jax.jit
def all_finite(tree) -> jax.Array:
  """True if no leaf of `tree` holds a NaN or an infinity."""
  return jnp.all(jnp.array([jnp.isfinite(x).all()
                            for x in jax.tree.leaves(tree)]))


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy in nats, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets).mean()


def loss_fn(params, model: nn.Module, x, y, dropout_key) -> jax.Array:
  logits = model.apply({"params": params}, x, train=True,
                       rngs={"dropout": dropout_key})  # (B, T, V)
  return cross_entropy(logits, y)


def carried_loss_fn(params, model: nn.Module, x, y, dropout_key, carry
                    ) -> tuple[jax.Array, Any]:
  """`loss_fn` of a window that continues from the LSTM state `carry`.

  Returns (loss, the state at the window's end). Truncated BPTT: the
  incoming state is a constant (`stop_gradient`), so the gradient of this
  window's loss stops at its first token and never reaches earlier windows.
  """
  carry = jax.lax.stop_gradient(carry)
  logits, carry = model.apply({"params": params}, x, carry, train=True,
                              rngs={"dropout": dropout_key},
                              method="extend")  # (B, T, V)
  return cross_entropy(logits, y), jax.lax.stop_gradient(carry)


def accumulated_grads(params, model: nn.Module, x, y, dropout_key,
                      grad_accum_steps: int, carry=None):
  """Mean loss and gradients over `grad_accum_steps` equal micro-batches.

  The micro-batches run one after another (a `lax.scan`), so only one
  micro-batch of activations is alive at a time; the mean of their mean
  losses is the loss of the whole batch.

  With `carry` (config.train.carry_state: the LSTM state of every row) the
  loss is `carried_loss_fn`, each micro-batch continuing from its rows'
  state, and the result is ((loss, new carry), gradients).
  """
  if carry is None:
    grad_fn, extra = jax.value_and_grad(loss_fn), ()
  else:
    grad_fn = jax.value_and_grad(carried_loss_fn, has_aux=True)
    extra = (carry,)
  if grad_accum_steps == 1:
    return grad_fn(params, model, x, y, dropout_key, *extra)
  B, A = x.shape[0], grad_accum_steps
  # Micro-batch i takes rows i, i + A, i + 2A, ...: with the batch split
  # across devices, every device then holds part of every micro-batch.
  micro = lambda a: a.reshape(B // A, A, *a.shape[1:]).swapaxes(0, 1)
  unmicro = lambda a: a.swapaxes(0, 1).reshape(B, *a.shape[2:])

  def add(total, batch):
    i, xm, ym, extra_m = batch
    out, grads = grad_fn(params, model, xm, ym,
                         jax.random.fold_in(dropout_key, i), *extra_m)
    loss, carry_m = (out, None) if carry is None else out
    return jax.tree.map(jnp.add, total, (loss, grads)), carry_m

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  total, carries = jax.lax.scan(add, zeros, (
      jnp.arange(grad_accum_steps), micro(x), micro(y),
      jax.tree.map(micro, extra)))
  loss, grads = jax.tree.map(lambda t: t / grad_accum_steps, total)
  if carry is None:
    return loss, grads
  return (loss, jax.tree.map(unmicro, carries)), grads


@functools.partial(jax.jit, static_argnames=("grad_accum_steps",))
def train_step(state: TrainState, x: jax.Array, y: jax.Array,
               dropout_key: jax.Array, grad_accum_steps: int = 1
               ) -> tuple[TrainState, dict]:
  """One AdamW update on the batch (x, y); returns the new state and metrics.

  A CarryTrainState's batch continues from its `carry` (truncated BPTT) and
  the new state holds the LSTM state where the batch ended.
  """
  carried = isinstance(state, CarryTrainState)
  out, grads = accumulated_grads(state.params, state.model, x, y,
                                 dropout_key, grad_accum_steps,
                                 state.carry if carried else None)
  loss = out[0] if carried else out
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
  state = state.replace(step=state.step + 1, params=params,
                        opt_state=opt_state)
  if carried:  # the lanes move on with the step, update dropped or not
    state = state.replace(carry=out[1])
  return state, metrics


def step_keys(seed_key: jax.Array, step: jax.Array) -> tuple[jax.Array, ...]:
  """(data key, dropout key) of a step: a function of (seed, step) only."""
  return tuple(jax.random.split(jax.random.fold_in(seed_key, step)))


@functools.partial(jax.jit, static_argnames=(
    "batch_size", "seq_len", "num_steps", "grad_accum_steps",
    "batch_sharding"), donate_argnames=("state",))
def train_steps(state: TrainState, tokens: jax.Array, seed_key: jax.Array, *,
                batch_size: int, seq_len: int, num_steps: int,
                grad_accum_steps: int = 1,
                batch_sharding: jax.sharding.Sharding | None = None
                ) -> tuple[TrainState, dict]:
  """`num_steps` train steps in one call, batches drawn on device.

  Running several steps per call (a `lax.scan`) saves the per-call dispatch
  and host round trip, the largest speed lever on a small CPU. Metrics come
  back stacked, one entry per step. With `batch_sharding` (see
  lm_jax/parallel.py) each device draws and trains on its slice of the batch.

  With a CarryTrainState (config.train.carry_state) step k reads the k-th
  window of every lane (`data.lane_batch`) instead of random windows, and
  the LSTM state passes from step to step in the scan's carry (the state's
  `carry`), reset to zero where the lanes wrap around; with
  `batch_sharding` each device keeps the state of its own lanes.
  """
  def one_step(state, _):
    data_key, dropout_key = step_keys(seed_key, state.step)
    if not isinstance(state, CarryTrainState):
      x, y = data.get_batch(tokens, data_key, batch_size, seq_len)
    else:
      x, y, reset = data.lane_batch(tokens, state.step, batch_size, seq_len)
      carry = jax.tree.map(lambda a: jnp.where(reset, jnp.zeros_like(a), a),
                           state.carry)
      if batch_sharding is not None:
        carry = jax.lax.with_sharding_constraint(carry, batch_sharding)
      state = state.replace(carry=carry)
    if batch_sharding is not None:
      x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)
    return train_step(state, x, y, dropout_key, grad_accum_steps)

  state, metrics = jax.lax.scan(one_step, state, length=num_steps)
  if isinstance(state, CarryTrainState) and batch_sharding is not None:
    # Returned as it came in (parallel.state_shardings), split by lane.
    state = state.replace(carry=jax.lax.with_sharding_constraint(
        state.carry, batch_sharding))
  return state, metrics


@functools.partial(jax.jit, static_argnames=("model",))
def eval_step(params, model: nn.Module, x: jax.Array, y: jax.Array
              ) -> jax.Array:
  """Summed cross-entropy (nats) over a batch, no dropout."""
  logits = model.apply({"params": params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()


def evaluate(params, model: nn.Module, xs, ys) -> float:
  """Mean loss in nats per token over fixed batches xs, ys of shape (N, B, T)."""
  total = sum(eval_step(params, model, x, y) for x, y in zip(xs, ys))
  return float(total) / ys.size
