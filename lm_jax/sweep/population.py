"""Training a group of members as one population.

The members' train states are stacked on a leading axis (M, ...), split
over the devices along it (`MEMBER`), and one jitted program runs a chunk
of steps of every member (`population_steps`): a lone run's steps, each
member with its own keys (from its seed) and its own optimiser numbers
(`lm_jax.sweep.hyper`). Members exchange nothing; each member's numbers
are those of a lone `lm-jax-train` of its settings.

A group trains through the loop of a lone run (lm_jax/loop/trainer.py:
train_loop) with `Population` as its stepper, and the same periodic
actions run for each member: each writes an ordinary run directory
(config.json, tokenizer.json, checkpoints, metrics.jsonl), its checkpoint
that member's slice of the population, in a lone run's layout. Running the
sweep again restores every member from its latest checkpoint and
continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm_jax.loop import preemption, trainer
from lm_jax.loop.clock import Meter
from lm_jax.loop.setup import Member, claim, diverged_step, set_up_members
from lm_jax.runs import checkpoints
from lm_jax.sweep import hyper
from lm_jax.sweep.plan import Group, member_devices
from lm_jax.training import steps

MEMBER = "member"  # the mesh axis the members are split along


def member_sharding(devices: int) -> NamedSharding:
  """Arrays with a leading member axis, split over the first `devices`."""
  mesh = Mesh(np.array(jax.devices()[:devices]), (MEMBER,))
  return NamedSharding(mesh, P(MEMBER))


def stack(trees: list):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member_slice(tree, i: int):
  """Member i's arrays, on the first device."""
  return jax.device_put(jax.tree.map(lambda x: x[i], tree),
                        jax.devices()[0])


def static_train(train: ml_collections.ConfigDict) -> tuple:
  """What the program reads of config.train besides the member numbers:
  hashable, so that it can be a static argument."""
  return tuple((k, train.get(k)) for k in (
      "num_steps", "optimizer", "schedule", "schedule_clock") if k in train)


def members_at_once(members_per_device: int) -> int:
  """How many members a device steps together (vmapped): all of them on
  an accelerator, one at a time on a CPU (`population_steps`)."""
  return 1 if jax.default_backend() == "cpu" else members_per_device


def _member_steps(state: steps.TrainState, hp: dict, seed_key: jax.Array,
                  tokens, count, clock, *, train: tuple, batch_size: int,
                  seq_len: int, num_steps: int, grad_accum_steps: int):
  """One member's `steps.train_steps`, its optimiser (and a budget
  clock's Decay) built from `hp`."""
  lone_tx, lone_decay = state.tx, state.decay
  settings = ml_collections.ConfigDict(dict(train))
  state = state.replace(tx=hyper.optimizer(settings, hp),
                        decay=hyper.decay(settings, hp))

  def one_step(state):
    data_key, dropout_key = steps.step_keys(seed_key, state.step)
    state, x, y = steps.next_batch(state, tokens, data_key, batch_size,
                                   seq_len)
    # The lone run's step itself (unjitted: it is traced into this one).
    return steps.train_step.__wrapped__(state, x, y, dropout_key,
                                        grad_accum_steps, clock)

  state, metrics = steps.repeat_steps(one_step, state, count, num_steps)
  return state.replace(tx=lone_tx, decay=lone_decay), metrics


@functools.partial(jax.jit, static_argnames=(
    "train", "batch_size", "seq_len", "num_steps", "grad_accum_steps",
    "sharding", "batch"), donate_argnames=("state",))
def population_steps(state: steps.TrainState, hp: dict, seed_keys, tokens,
                     count=None, clock=None, *, train: tuple, batch_size: int,
                     seq_len: int, num_steps: int, grad_accum_steps: int,
                     sharding: NamedSharding, batch: int = 1):
  """`num_steps` (or `count`) steps of every member: state and metrics
  (M, num_steps) come back split over the devices as they came in.

  Each device runs its own members (`jax.shard_map`: nothing crosses
  devices) `batch` at a time (`jax.lax.map`: a vmap of `batch` members
  inside a loop over the rest). One at a time keeps the lone run's plain
  matrix products: on a CPU, XLA's batched products of a vmap over many
  small models ran slower than the same products one model after another.
  On an accelerator, where one small model leaves most of the chip idle,
  a device's members step together instead (`members_at_once`; not yet
  measured there).
  """
  run = functools.partial(
      _member_steps, train=train, batch_size=batch_size, seq_len=seq_len,
      num_steps=num_steps, grad_accum_steps=grad_accum_steps)
  member, whole = P(MEMBER), P()
  # The optional arguments given, the same for every member.
  shared = {} if clock is None else {"clock": clock}
  if count is not None:
    shared["count"] = jnp.asarray(count, jnp.int32)

  def local(state, hp, seed_keys, tokens, shared):
    return jax.lax.map(lambda m: run(*m, tokens, shared.get("count"),
                                     shared.get("clock")),
                       (state, hp, seed_keys),
                       batch_size=batch if batch > 1 else None)

  return jax.shard_map(
      local, mesh=sharding.mesh,
      in_specs=(member, member, member, whole, whole),
      out_specs=member, check_vma=False)(state, hp, seed_keys, tokens,
                                         shared)


# Compiled population programs, by what `jax.jit` keys its own cache on:
# compiled ahead of the call, so that the loop can leave the compiling out
# of the members' training seconds.
_PROGRAMS: dict = {}


def _program(args: tuple, static: dict) -> Callable:
  """`population_steps` compiled for `args` and `static` (once each)."""
  leaves, tree = jax.tree.flatten(args)
  key = (tree, tuple(sorted(static.items())), tuple(
      (np.shape(a), str(getattr(a, "dtype", type(a))),
       getattr(a, "sharding", None))
      for a in leaves))
  if key not in _PROGRAMS:
    _PROGRAMS[key] = population_steps.trace(*args, **static).lower().compile()
  return _PROGRAMS[key]


class Population:
  """A group as the loop's stepper (lm_jax/loop/stepper.py: Stepper): its
  members' states stacked (M, ...) and split over the devices; a chunk of
  steps is one call of `population_steps`."""

  def __init__(self, group: Group, members: list[Member],
               states: list[steps.TrainState], step: int):
    t = group.config.train
    self.config, self.task, self.loaded = group.config, group.task, group.loaded
    self.model, self.members, self.step = group.model, members, step
    self.workdir = group.members[0].workdir.parent  # the sweep's
    self.compiling = f"group {group.index + 1}: compiling the population step"
    self.evaluating = (f"group {group.index + 1}: evaluating {len(members)} "
                       "members")
    tx = states[0].tx  # a static field: one for all (the step builds its own)
    sharding = member_sharding(group.devices)
    self.state = jax.device_put(stack([s.replace(tx=tx) for s in states]),
                                sharding)
    numbers = [hyper.numbers(m.config.train) for m in members]
    self.hp = jax.device_put({k: jnp.asarray([n[k] for n in numbers],
                                             jnp.float32)
                              for k in hyper.NUMBERS}, sharding)  # (M,) each
    self.seed_keys = jax.device_put(jnp.stack([
        jax.random.split(jax.random.key(m.config.seed))[1]
        for m in members]), sharding)  # (M,): each its lone run's seed key
    self.tokens = jax.device_put(group.loaded.train, NamedSharding(
        sharding.mesh, P()))
    per_device = len(members) // group.devices
    # Members step one at a time on a device (CPU) or together: each one's
    # part of the wall seconds.
    self.share = members_at_once(per_device) / per_device
    self.static = dict(
        train=static_train(t), batch_size=t.batch_size,
        seq_len=t.seq_len, num_steps=t.steps_per_call,
        grad_accum_steps=t.grad_accum_steps, sharding=sharding,
        batch=members_at_once(per_device))
    self.compile_s = 0.0

  def advance(self, count: int, dispatched: Callable | None = None,
              clock: np.ndarray | None = None) -> dict:
    whole = count == self.config.train.steps_per_call
    args = (self.state, self.hp, self.seed_keys, self.tokens,
            None if whole else count, clock)
    began = time.perf_counter()
    program = _program(args, self.static)  # compiled apart: not training
    self.compile_s = time.perf_counter() - began
    self.state, metrics = program(*args)
    if dispatched is not None:
      dispatched()
    self.step += count
    return {k: v[:, :count] for k, v in jax.device_get(metrics).items()}

  def member_state(self, i: int) -> steps.TrainState:
    return member_slice(self.state, i)

  def per_member(self, fn: Callable) -> np.ndarray:
    return np.asarray(_vmapped(fn)(self.state))


@functools.cache
def _vmapped(fn: Callable) -> Callable:
  """fn of one member's state, jitted over the stacked states (compiled
  once per function)."""
  return jax.jit(jax.vmap(fn))


def saved_step(workdir) -> int | None:
  """The step of a member's latest committed checkpoint (None: none); an
  unfinished one (a save cut short) does not count."""
  if not checkpoints.has_steps(workdir):
    return None
  return checkpoints.manager(workdir, read_only=True).latest_step()


def resume_parts(group: Group) -> list[Group]:
  """`group` split by the step its members resume from, furthest first.

  A population steps its members in lockstep, so members saved at
  different steps (a sweep stopped while saving, or members added to a
  finished sweep) train as separate populations, each from its own step.
  A diverged member's checkpoint lags behind its step: it goes with the
  first part (it is neither trained nor saved again).
  """
  steps_of = {id(m): saved_step(m.workdir) for m in group.members}
  diverged = [m for m in group.members if diverged_step(m.workdir) is not None]
  live = [m for m in group.members if m not in diverged]
  starts = sorted({steps_of[id(m)] for m in live}, key=lambda s: -(s or -1))
  parts = [[m for m in live if steps_of[id(m)] == s] for s in starts] or [[]]
  parts[0] += diverged
  if len(parts) == 1:
    return [group]
  return [dataclasses.replace(group, members=part, devices=member_devices(
      len(part), jax.device_count())) for part in parts]


def train_group(group: Group, hold: contextlib.ExitStack,
                stop: preemption.StopOnSignal, command_started: float,
                report: Callable) -> None:
  """Trains `group` to its num_steps, resuming its members where saved.

  `report(group, step, records, steps_per_s)` prints a progress line
  (records: each member's log record; steps_per_s None before it is timed).
  Raises preemption.Interrupted after saving every member on a signal.
  """
  # A member's clock (metrics.jsonl's elapsed_s) starts with its group;
  # the first group's with the command, its start-up counted.
  clock_start = command_started if group.index == 0 else time.perf_counter()
  label = f"group {group.index + 1}"
  parts = resume_parts(group)
  num_steps = group.config.train.num_steps
  for part in parts:
    start = saved_step(part.members[0].workdir) or 0
    if len(parts) > 1 and start >= num_steps:
      for m in part.members:  # locked all the same: no one else trains them
        claim(m.workdir, m.config, group.loaded.tokenizer, hold)
      print(f"{label}: {len(part.members)} member(s) already complete at "
            f"step {start}: {', '.join(m.name for m in part.members)}")
      continue
    if len(parts) > 1:
      where = f"resume from step {start}" if start else "start"
      print(f"{label}: {len(part.members)} member(s) {where}: "
            f"{', '.join(m.name for m in part.members)}", flush=True)
    members, states, step = set_up_members(
        part.members, part.model, part.task.objective,
        part.loaded.tokenizer, hold, clock_start, label)
    meter = Meter()
    actions = trainer.actions_for(part.config.train, meter, stop,
                                  functools.partial(report, part))
    trainer.train_loop(Population(part, members, states, step), actions,
                       meter)
    clock_start = time.perf_counter()  # a later part's, as a later group's


def train_groups(groups: list[Group], stop: preemption.StopOnSignal,
                 command_started: float, report) -> None:
  """Trains every group in turn (`train_group`); the members' locks are
  held until the last group ends."""
  with contextlib.ExitStack() as hold:
    for group in groups:
      print(f"group {group.index + 1}/{len(groups)}: "
            f"{len(group.members)} members on {group.devices} device(s)",
            flush=True)
      train_group(group, hold, stop, command_started, report)
