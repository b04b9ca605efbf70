"""Training a group of members as one population.

The members' train states are stacked on a leading axis (M, ...), split
over the devices along it (`MEMBER`), and one jitted program runs a chunk
of steps of every member (`population_steps`): a lone run's steps, each
member with its own keys (from its seed) and its own optimiser numbers
(`lm_jax.sweep.hyper`). Members exchange nothing; each member's numbers
are those of a lone `lm-jax-train` of its settings.

Each member writes an ordinary run directory (config.json, tokenizer.json,
checkpoints, metrics.jsonl): the checkpoint holds that member's slice of
the population, in a lone run's layout. Running the sweep again restores
every member from its latest checkpoint and continues exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm_jax.errors import UserError
from lm_jax.loop import preemption
from lm_jax.loop.clock import Clock
from lm_jax.runs import checkpoints, rundir
from lm_jax.runs.metrics import MetricsLog
from lm_jax.sweep import hyper
from lm_jax.sweep.plan import Group
from lm_jax.training import optimizers, steps
from lm_jax.views import progress

MEMBER = "member"  # the mesh axis the members are split along
DIVERGED = "diverged"  # a member's status once its loss is not finite
# In a member's run directory: the step it diverged at, so that a resumed
# sweep knows why its checkpoint lags behind the others'.
DIVERGED_FILE = "diverged.json"


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
  return tuple((k, train.get(k)) for k in ("num_steps", "optimizer",
                                            "schedule") if k in train)


def members_at_once(members_per_device: int) -> int:
  """How many members a device steps together (vmapped): all of them on
  an accelerator, one at a time on a CPU (`population_steps`)."""
  return 1 if jax.default_backend() == "cpu" else members_per_device


def _member_steps(state: steps.TrainState, hp: dict, seed_key: jax.Array,
                  tokens, count, *, train: tuple, batch_size: int,
                  seq_len: int, num_steps: int, grad_accum_steps: int):
  """One member's `steps.train_steps`, its optimiser built from `hp`."""
  lone_tx = state.tx
  state = state.replace(tx=hyper.optimizer(ml_collections.ConfigDict(
      dict(train)), hp))

  def one_step(state):
    data_key, dropout_key = steps.step_keys(seed_key, state.step)
    state, x, y = steps.next_batch(state, tokens, data_key, batch_size,
                                   seq_len)
    # The lone run's step itself (unjitted: it is traced into this one).
    return steps.train_step.__wrapped__(state, x, y, dropout_key,
                                        grad_accum_steps)

  state, metrics = steps.repeat_steps(one_step, state, count, num_steps)
  return state.replace(tx=lone_tx), metrics


@functools.partial(jax.jit, static_argnames=(
    "train", "batch_size", "seq_len", "num_steps", "grad_accum_steps",
    "sharding", "batch"), donate_argnames=("state",))
def population_steps(state: steps.TrainState, hp: dict, seed_keys, tokens,
                     count=None, *, train: tuple, batch_size: int,
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
  counted = () if count is None else (jnp.asarray(count, jnp.int32),)

  def local(state, hp, seed_keys, tokens, *counted):
    return jax.lax.map(lambda m: run(*m, tokens, *(counted or (None,))),
                       (state, hp, seed_keys),
                       batch_size=batch if batch > 1 else None)

  return jax.shard_map(
      local, mesh=sharding.mesh,
      in_specs=(member, member, member, whole) + (whole,) * len(counted),
      out_specs=member, check_vma=False)(state, hp, seed_keys, tokens,
                                         *counted)


class Member:
  """What the loop keeps of one member: its log, checkpoints and clock."""

  def __init__(self, spec, started: float):
    self.spec = spec
    self.mngr = checkpoints.manager(spec.workdir)
    self.clock = Clock(started)
    self.log: MetricsLog | None = None
    marker = spec.workdir / DIVERGED_FILE
    self.diverged_at: int | None = (json.loads(marker.read_text())["step"]
                                    if marker.exists() else None)
    self.status = "trained" if self.diverged_at is None else DIVERGED

  def diverge(self, step: int) -> None:
    self.status, self.diverged_at = DIVERGED, step
    rundir.write_atomically(self.spec.workdir / DIVERGED_FILE,
                            lambda p: p.write_text(json.dumps(
                                {"step": step}) + "\n"))


def _initial_states(group: Group, members: list[Member]):
  """Each member's state: restored from its latest checkpoint, or fresh;
  and the step the group resumes from (None: from the start)."""
  states, starts = [], []
  for m in members:
    init_key, _ = jax.random.split(jax.random.key(m.spec.config.seed))
    state = steps.create_train_state(group.model, m.spec.config.train,
                                     init_key, objective=group.task.objective)
    start = m.mngr.latest_step()
    if start is not None:
      start, state = checkpoints.resume(m.mngr, state)
      m.clock.resume(checkpoints.saved_metadata(m.mngr, start))
    states.append(state)
    starts.append(start)
  live = [s for m, s in zip(members, starts) if m.status != DIVERGED]
  if len(set(live)) > 1:
    saved = ", ".join(f"{m.spec.name}: {s}" for m, s in zip(members, starts))
    raise UserError(
        f"the members of group {group.index + 1} were saved at different "
        f"steps ({saved}), a sweep killed while saving; move the members "
        f"ahead of step {min(s or 0 for s in live)} away to train them "
        "again, or use a new --workdir")
  return states, (live or starts)[0]


def train_group(group: Group, hold: contextlib.ExitStack,
                stop: preemption.StopOnSignal, command_started: float,
                report) -> None:
  """Trains `group` to its num_steps, resuming its members where saved.

  `report(group, step, losses, elapsed, steps_per_s)` prints a progress
  line (losses: each member's last; steps_per_s None before it is timed).
  Raises preemption.Interrupted after saving every member on a signal.
  """
  t = group.config.train
  tokenizer = group.loaded.tokenizer
  for spec in group.members:
    rundir.prepare(spec.workdir)
    hold.enter_context(rundir.lock(spec.workdir))
    rundir.write_run(spec.workdir, spec.config, tokenizer)
  # A member's clock (metrics.jsonl's elapsed_s) starts with its group;
  # the first group's with the command, its start-up counted.
  clock_start = command_started if group.index == 0 else time.perf_counter()
  members = [Member(spec, clock_start) for spec in group.members]
  started = time.perf_counter()
  states, start = _initial_states(group, members)
  tx = states[0].tx  # a static field: one for all (the step builds its own)
  sharding = member_sharding(group.devices)
  state = jax.device_put(stack([s.replace(tx=tx) for s in states]), sharding)
  hp = jax.device_put({k: jnp.asarray([hyper.numbers(m.config.train)[k]
                                       for m in group.members], jnp.float32)
                       for k in hyper.NUMBERS}, sharding)
  seed_keys = jax.device_put(jnp.stack([
      jax.random.split(jax.random.key(m.config.seed))[1]
      for m in group.members]), sharding)
  tokens = jax.device_put(group.loaded.train, jax.sharding.NamedSharding(
      sharding.mesh, P()))
  for m in members:
    m.log = MetricsLog(m.spec.workdir, resume_step=start)
  run = functools.partial(
      population_steps, train=static_train(t), batch_size=t.batch_size,
      seq_len=t.seq_len, num_steps=t.steps_per_call,
      grad_accum_steps=t.grad_accum_steps, sharding=sharding,
      batch=members_at_once(len(members) // group.devices))

  step = start or 0
  end = t.num_steps
  tick, tick_step, compiled, rate = time.perf_counter(), step, False, None
  if step >= end:
    print(f"group {group.index + 1}: already complete at step {step}")
  while step < end:
    if not compiled:
      progress.phase(f"group {group.index + 1}: compiling the population "
                     "step")
    boundary = min(end, (step // t.log_every + 1) * t.log_every,
                   (step // t.eval_every + 1) * t.eval_every)
    count = min(t.steps_per_call, boundary - step)
    state, metrics = run(state, hp, seed_keys, tokens,
                         None if count == t.steps_per_call else count)
    metrics = {k: v[:, :count] for k, v in jax.device_get(metrics).items()}
    step += count
    if not compiled:
      tick, tick_step, compiled = time.perf_counter(), step, True
    _check_members(members, metrics, step)
    if step % t.log_every == 0 or step == end:
      now = time.perf_counter()
      if step > tick_step:
        rate = (step - tick_step) / (now - tick)
      for i, m in enumerate(members):
        record = dict(step=step, loss=float(metrics["loss"][i, -1]),
                      lr=float(optimizers.lr_schedule(m.spec.config.train)(
                          step - 1)),
                      grad_norm=float(metrics["grad_norm"][i, -1]),
                      elapsed_s=m.clock.elapsed())
        if rate:
          record["tokens_per_s"] = rate * t.batch_size * t.seq_len
        m.log.write(**record)
      report(group, step, metrics["loss"][:, -1], now - started, rate)
      tick, tick_step = time.perf_counter(), step
    if step % t.eval_every == 0 or step == end:
      progress.phase(f"group {group.index + 1}: evaluating "
                     f"{len(members)} members")
      _evaluate(group, members, state, step)
      tick, tick_step = time.perf_counter(), step
    if stop.requested:
      for i, m in enumerate(members):
        if m.mngr.latest_step() != step and m.status != DIVERGED:
          checkpoints.save(m.mngr, step, member_slice(state, i),
                           metadata=m.clock.saved())
      raise preemption.Interrupted(stop.signum, step,
                                   group.members[0].workdir.parent)


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


def _check_members(members: list[Member], metrics: dict, step: int) -> None:
  """Marks a member whose loss or gradients stopped being finite: it is
  neither evaluated nor saved again (its last good checkpoint stays); the
  others train on."""
  finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
  count = finite.shape[1]
  for i, m in enumerate(members):
    if m.status != DIVERGED and not finite[i].all():
      if m.spec.config.train.skip_nonfinite:
        continue  # its update was dropped, as in a lone run
      m.diverge(step - count + int(np.argmin(finite[i])) + 1)
      print(f"member {m.spec.name} diverged at step {m.diverged_at} (the "
            "loss or gradients are not finite); its last good checkpoint "
            "stays, the others train on", flush=True)


def _evaluate(group: Group, members: list[Member], state, step: int
              ) -> None:
  """Each member's evaluation (the task's, as a lone run's), checkpoint
  and record; one line per member."""
  for i, m in enumerate(members):
    if m.status == DIVERGED:
      continue
    single = member_slice(state, i)
    with m.clock.evaluating():
      params = optimizers.eval_params(single.params, single.opt_state)
      record, lines, texts = group.task.evaluate(
          params, group.model, group.loaded, step, m.spec.config)
      record.update(elapsed_s=m.clock.eval_started, eval_s=m.clock.eval_s)
      checkpoints.save(m.mngr, step, single, record["val_loss"],
                       m.clock.saved())
    m.log.write(**record)
    for name, text in texts.items():
      m.log.text(step, name, text)
    print(f"  {m.spec.name}: {lines[0]}", flush=True)
