"""The jitted train and eval steps: one optimiser update, several on device.

Everything here is a pure function of its arguments: the data batch and the
dropout key of step s are functions of (seed, s), so a run resumed from a
checkpoint continues exactly as if it had never stopped.

With config.train.carry_state (recurrent models) training is truncated
backpropagation through time, as in char-rnn: the batch rows are contiguous
lanes of the text read window after window (`windows.lane_batch`), and the
model's state at the end of one window starts the next (`TrainState.carry`),
with no gradient flowing back across the boundary. Without it the carry is
None and every window starts afresh: the same code, with an empty carry.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from lm_jax.data import windows
from lm_jax.training import losses, programs
from lm_jax.training.optimizers import Decay, budget_decay, make_optimizer


class Objective(NamedTuple):
  """What a train step reads for a task: how it draws a batch and which
  targets, weighted how, it scores; the loss is `losses.cross_entropy`.
  Each task declares its own (`lm_jax/tasks/__init__.py: TASKS`) and
  the train state carries it (`TrainState.objective`).

  The labels a batch draws are the target ids (text, pairs) or a pytree
  holding them and their weights (masked: the masking drew both).
  """
  get_batch: Callable  # (data, key, batch_size, seq_len) -> (inputs, labels)
  weights: Callable  # labels -> the targets' weights, or None: all count 1
  targets: Callable = lambda labels: labels  # labels -> the target ids


# Running text: random windows of the token array, every target counts.
NEXT_TOKEN = Objective(windows.get_batch, lambda targets: None)


class TrainState(struct.PyTreeNode):
  """What a checkpoint holds: the step, the parameters, the optimiser state,
  and the carried recurrent state.

  `carry` (config.train.carry_state, truncated BPTT) is the model's
  decoding state where each lane's last window ended, row b for lane b;
  None when windows start afresh. It is part of the checkpoint: a resumed
  run continues every lane from the very state it stopped in, exactly as
  if it had never stopped. A None carry saves nothing, so a stateless
  run's checkpoints hold step, params and opt_state alone.

  `z_loss` (config.train.z_loss) and `objective` (the task's: how batches
  are drawn and scored), like `model` and `tx`, say how to train and are
  no part of a checkpoint.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  model: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  carry: Any = None
  z_loss: float = struct.field(pytree_node=False, default=0.0)
  objective: Objective = struct.field(pytree_node=False,
                                     default=NEXT_TOKEN)
  # config.train.schedule_clock=budget: the update's scale by progress
  # (optimizers.Decay); None: the optimiser's schedule decays.
  decay: Decay | None = struct.field(pytree_node=False, default=None)


def create_train_state(model: nn.Module, train: ml_collections.ConfigDict,
                       key: jax.Array, stored: bool = False,
                       objective: Objective = NEXT_TOKEN,
                       params=None) -> TrainState:
  """Fresh parameters (from `key`) and optimiser state; with
  train.carry_state, the initial state of every lane. `objective`: the
  task's (`lm_jax.tasks`), next-token prediction unless it says otherwise.

  `stored`: the program that makes them may come from, and goes to, the
  store of whole programs (lm_jax/training/programs.py), so that a start
  skips tracing the model; not inside a trace (`jax.eval_shape`).
  `params`: start from these (a checkpoint's) instead of fresh ones.
  """
  tx = make_optimizer(train)

  def init(key):
    params = model.init(key, *model.dummy_inputs(train.seq_len))["params"]
    return params, tx.init(params)

  # One program for both (read from the compilation cache on a start that
  # has it), where the optimiser's init run eagerly took an op at a time.
  if params is not None:
    opt_state = jax.jit(tx.init)(params)
  elif stored:
    program = programs.compiled(
        "init", jax.jit(init), (key,), {},
        settings=dict(model=repr(model), train=train.to_dict()))
    params, opt_state = program(key)
  else:
    params, opt_state = jax.jit(init)(key)
  carry = None
  if train.carry_state:
    # One buffer per array (initial_state may share one): it is donated.
    carry = jax.tree.map(jnp.copy, model.initial_state(train.batch_size))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=opt_state, model=model, tx=tx, carry=carry,
                    z_loss=train.z_loss, objective=objective,
                    decay=budget_decay(train))


def skipped_updates(state: TrainState) -> int:
  """How many updates were dropped for non-finite gradients, over the run."""
  return int(state.opt_state.total_notfinite)


@jax.jit
def all_finite(tree) -> jax.Array:
  """True if no leaf of `tree` holds a NaN or an infinity."""
  return jnp.all(jnp.array([jnp.isfinite(x).all()
                            for x in jax.tree.leaves(tree)]))


def loss_fn(params, model: nn.Module, x, y, dropout_key, carry=None,
            z_loss: float = 0.0, objective: Objective = NEXT_TOKEN
            ) -> tuple[jax.Array, Any]:
  """Mean loss of a window, and the carry for the next (None: no carry).

  With a carry (truncated BPTT) the window continues from it, and the
  incoming state is a constant (`stop_gradient`): the gradient of this
  window's loss stops at its first token and never reaches earlier windows.
  `z_loss` > 0 adds the z-loss term (`losses.cross_entropy`; then the
  logged train loss includes it; evaluation reports cross-entropy alone).
  `objective` says which targets the labels `y` hold and their weights.
  """
  logits, carry = model.apply(
      {"params": params}, x, jax.lax.stop_gradient(carry), train=True,
      rngs={"dropout": dropout_key}, method="window")  # (B, T, V)
  loss = losses.cross_entropy(logits, objective.targets(y),
                              objective.weights(y), z_loss)
  return loss, jax.lax.stop_gradient(carry)


def accumulated_grads(params, model: nn.Module, x, y, dropout_key,
                      grad_accum_steps: int, carry=None, z_loss: float = 0.0,
                      objective: Objective = NEXT_TOKEN):
  """((mean loss, new carry), gradients) over `grad_accum_steps` equal
  micro-batches.

  The micro-batches run one after another (a `lax.scan`), so only one
  micro-batch of activations is alive at a time; the mean of their mean
  losses is the loss of the whole batch. Each micro-batch continues from
  its own rows' carry.
  """
  grad_fn = jax.value_and_grad(functools.partial(
      loss_fn, z_loss=z_loss, objective=objective), has_aux=True)
  if grad_accum_steps == 1:
    return grad_fn(params, model, x, y, dropout_key, carry)
  B, A = jax.tree.leaves(y)[0].shape[0], grad_accum_steps
  # Micro-batch i takes rows i, i + A, i + 2A, ...: with the batch split
  # across devices, every device then holds part of every micro-batch.
  micro = lambda a: a.reshape(B // A, A, *a.shape[1:]).swapaxes(0, 1)
  unmicro = lambda a: a.swapaxes(0, 1).reshape(B, *a.shape[2:])

  def add(total, batch):
    i, xm, ym, carry_m = batch
    (loss, carry_m), grads = grad_fn(params, model, xm, ym,
                                     jax.random.fold_in(dropout_key, i),
                                     carry_m)
    return jax.tree.map(jnp.add, total, (loss, grads)), carry_m

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  total, carries = jax.lax.scan(add, zeros, (
      jnp.arange(grad_accum_steps), jax.tree.map(micro, x),
      jax.tree.map(micro, y),
      jax.tree.map(micro, carry)))
  loss, grads = jax.tree.map(lambda t: t / grad_accum_steps, total)
  return (loss, jax.tree.map(unmicro, carries)), grads


@functools.partial(jax.jit, static_argnames=("grad_accum_steps",))
def train_step(state: TrainState, x: jax.Array, y: jax.Array,
               dropout_key: jax.Array, grad_accum_steps: int = 1,
               clock: jax.Array | None = None) -> tuple[TrainState, dict]:
  """One optimiser update on the batch (x, y); returns the new state and metrics.

  With the state's `decay` (a budget-clocked run) the update is scaled by
  its factor at this step, `clock` the budget's line (`optimizers.Decay`).

  The batch continues from the state's `carry` (truncated BPTT; None: from
  scratch) and the new state holds the carry where the batch ended: the
  lanes move on with the step, whether its update is applied or dropped.
  """
  (loss, carry), grads = accumulated_grads(
      state.params, state.model, x, y, dropout_key, grad_accum_steps,
      state.carry, state.z_loss, state.objective)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
  if state.decay is not None:
    # No clock given (a step taken alone): the steps' share only.
    factor = state.decay(state.step, jnp.zeros(2) if clock is None else clock)
    updates = jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
    metrics["lr_factor"] = factor  # the logged rate is the schedule's x it
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state, carry=carry), metrics


def step_keys(seed_key: jax.Array, step: jax.Array) -> tuple[jax.Array, ...]:
  """(data key, dropout key) of a step: a function of (seed, step) only."""
  return tuple(jax.random.split(jax.random.fold_in(seed_key, step)))


def next_batch(state: TrainState, tokens, data_key: jax.Array,
               batch_size: int, seq_len: int, constrain=lambda tree: tree):
  """A step's batch, and the state it continues from.

  Without a carry (fixed at trace time: one compiled program), the batch
  of the state's objective drawn with `data_key`; with one, the step's
  window of every lane (`windows.lane_batch`), the carry reset to the
  initial state where the lanes wrap around. `constrain` places the carry
  (a sharding constraint). `tokens` may be a `windows.Drawn` chunk
  (lm_jax/training/streaming.py): the same windows, read on host.
  """
  if isinstance(tokens, windows.Drawn):  # streamed: read on host
    x, y, reset = windows.drawn_batch(tokens, state.step)
    if state.carry is None:
      return state, x, y
  elif state.carry is None:
    x, y = state.objective.get_batch(tokens, data_key, batch_size, seq_len)
    return state, x, y
  else:
    x, y, reset = windows.lane_batch(tokens, state.step, batch_size, seq_len)
  fresh = state.model.initial_state(batch_size)
  state = state.replace(carry=constrain(jax.tree.map(
      lambda new, a: jnp.where(reset, new, a), fresh, state.carry)))
  return state, x, y


def repeat_steps(one_step: Callable, state, count, num_steps: int):
  """`num_steps` calls of one_step(state) -> (state, metrics) on device,
  their metrics stacked; with `count`, only the first `count` of them.

  Without `count`, a `lax.scan`; with it, the same steps in a
  `lax.while_loop` whose length is only known at run time (metrics NaN
  past `count`), so that one compiled program serves every count. Whole
  calls keep the scan, which the while_loop is slower than per step
  (experiments/results/loop_forms_cpu.md).
  """
  if count is None:
    return jax.lax.scan(lambda state, _: one_step(state), state,
                        length=num_steps)

  def body(loop):
    i, state, metrics = loop
    state, step_metrics = one_step(state)
    return i + 1, state, jax.tree.map(lambda m, v: m.at[i].set(v), metrics,
                                      step_metrics)

  unset = jax.tree.map(lambda m: jnp.full((num_steps, *m.shape), jnp.nan,
                                          m.dtype),
                       jax.eval_shape(one_step, state)[1])
  _, state, metrics = jax.lax.while_loop(
      lambda loop: loop[0] < jnp.minimum(count, num_steps), body,
      (jnp.int32(0), state, unset))
  return state, metrics


@functools.partial(jax.jit, static_argnames=(
    "batch_size", "seq_len", "num_steps", "grad_accum_steps",
    "batch_sharding"), donate_argnames=("state",))
def train_steps(state: TrainState, tokens: jax.Array, seed_key: jax.Array,
                count: jax.Array | int | None = None,
                clock: jax.Array | None = None, *,
                batch_size: int, seq_len: int, num_steps: int,
                grad_accum_steps: int = 1,
                batch_sharding: jax.sharding.Sharding | None = None
                ) -> tuple[TrainState, dict]:
  """`num_steps` train steps in one call, batches drawn on device; with
  `count`, only the first `count` of them.

  `tokens` is the training data batches are drawn from: the text's ids,
  or what the state's objective draws from (pairs: the padded (src, tgt)
  arrays), or this call's windows read on host (`windows.Drawn`, a
  streamed text: lm_jax/training/streaming.py).

  Running several steps per call (a loop on device) saves the per-call
  dispatch and host round trip, the largest speed lever on a small CPU.
  Metrics come back stacked, `num_steps` entries, NaN past `count`.
  `count` is traced, so one compiled program serves every count: the
  trainer stops at each log and evaluation boundary with a shorter call,
  and a static count would compile a new program for each remainder (on a
  2-core CPU, seconds each). Without `count` (every full call), a
  `lax.scan` of `num_steps`: the program every call ran before `count`
  existed. With `batch_sharding` (lm_jax/training/parallel.py) each device
  draws and trains on its slice of the batch.

  With a carry (config.train.carry_state) step k reads the k-th window of
  every lane (`windows.lane_batch`) instead of random windows, and the
  model's state passes from step to step in the state's `carry`, back to
  the initial state where the lanes wrap around; with `batch_sharding`
  each device keeps the state of its own lanes.

  `clock`: a budget-clocked run's (a, b), the share of its budget spent
  as a line in the step (`optimizers.Decay`); None for the rest.
  """
  constrain = lambda tree: (tree if batch_sharding is None else
                            jax.lax.with_sharding_constraint(tree,
                                                             batch_sharding))

  def one_step(state):
    data_key, dropout_key = step_keys(seed_key, state.step)
    state, x, y = next_batch(state, tokens, data_key, batch_size, seq_len,
                             constrain)
    return train_step(state, *constrain((x, y)), dropout_key,
                      grad_accum_steps, clock)

  state, metrics = repeat_steps(one_step, state, count, num_steps)
  # Returned as it came in (parallel.state_shardings), split by lane.
  return state.replace(carry=constrain(state.carry)), metrics


@functools.partial(jax.jit, static_argnames=("model",))
def eval_step(params, model: nn.Module, x: jax.Array, y: jax.Array
              ) -> jax.Array:
  """Summed cross-entropy (nats) over a batch, no dropout."""
  # Without `mutable`, apply returns the output alone, not (output, state).
  logits = cast(jax.Array, model.apply({"params": params}, x))
  return losses.loss_sums(logits, y).nats


def evaluate(params, model: nn.Module, xs, ys) -> float:
  """Mean loss in nats per token over fixed batches xs, ys of shape (N, B, T)."""
  total = sum(eval_step(params, model, x, y) for x, y in zip(xs, ys))
  return float(total) / ys.size
