"""What the loop trains: a stepper and its members.

A *stepper* advances every model it holds by a chunk of steps; its
*members* (lm_jax/loop/setup.py: Member) are what the periodic actions
(lm_jax/loop/actions.py) read and write of each model: its settings, run
directory, checkpoints, logs and clock. A lone run is a stepper of one
member (`Lone`); a sweep's population stacks its members' states on an
axis and steps them in one program (lm_jax/sweep/population.py:
Population). Both go through the same loop and the same actions.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Callable, Protocol

import jax
import ml_collections
import numpy as np

from lm_jax import tasks
from lm_jax.loop.clock import Clock
from lm_jax.loop.setup import Member, Setup
from lm_jax.training import parallel, programs, steps, streaming


class Stepper(Protocol):
  """What the loop drives: members trained together, on one schedule."""
  config: ml_collections.ConfigDict  # the settings the members share
  task: tasks.Task
  loaded: tasks.Loaded
  model: Any  # an lm_jax.models.base.Model
  workdir: pathlib.Path  # where a stop on a signal says the run is saved
  members: list[Member]
  step: int  # every member's step
  compiling: str  # the phase printed before the first chunk
  evaluating: str  # the phase printed before the members' evaluations
  # The part of a chunk's wall seconds that is one member's training time
  # (its clock's train_s): 1 alone; less where members share a device.
  share: float
  # Seconds the last `advance` spent reading or compiling its program
  # (none once each program exists): not training time.
  compile_s: float

  def advance(self, count: int, dispatched: Callable | None = None,
              clock: np.ndarray | None = None) -> dict:
    """`count` steps of every member; their metrics on the host, (M, count).

    `dispatched()`, if given, is called once the call is compiled (or read
    from the compilation cache) and running, before its results are awaited.
    `clock`: a budget-clocked run's budget line (`steps.train_steps`).
    """

  def member_state(self, i: int) -> steps.TrainState:
    """Member i's train state, as a lone run of its settings holds it."""

  def per_member(self, fn: Callable) -> np.ndarray:
    """fn(state) of every member's state, stacked: (M, ...)."""


class Lone:
  """A lone run: one member, its state placed by the run's mesh; a chunk
  of steps is one call of `steps.train_steps`."""
  compiling = "compiling the train step"
  evaluating = "evaluating"
  share = 1.0
  compile_s = 0.0

  def __init__(self, run: Setup, clock: Clock):
    self.run, self.state, self.step = run, run.state, int(run.state.step)
    self.config, self.task, self.loaded = run.config, run.task, run.loaded
    self.model, self.workdir = run.model, run.workdir
    self.members = [Member(run.workdir.name, run.config, run.workdir,
                           run.mngr, run.log, clock)]

  def advance(self, count: int, dispatched: Callable | None = None,
              clock: np.ndarray | None = None) -> dict:
    run, t, state = self.run, self.config.train, self.state
    # A whole call is the plain program; every shorter one shares another.
    whole = count == t.steps_per_call
    data = run.train_data
    if isinstance(data, streaming.Stream):  # this chunk's windows, read on host
      data = data.chunk(self.step)
    args = (state, data, run.seed_key, None if whole else count, clock)
    began, self.compile_s = time.perf_counter(), 0.0
    if whole not in run.programs:  # the first call of each: read or compile
      run.programs[whole] = programs.compiled(
          "train_steps", steps.train_steps, args, dict(
              batch_size=t.batch_size, seq_len=t.seq_len,
              num_steps=t.steps_per_call, grad_accum_steps=t.grad_accum_steps,
              batch_sharding=parallel.batch_sharding(run.mesh)),
          settings=dict(model=self.config.model.to_dict(), train=t.to_dict()),
          # The output: the state as it came in, and the metrics by name.
          describe_out=lambda tree: sorted(tree.unflatten(
              range(tree.num_leaves))[1]),
          rebuild_out=lambda names: jax.tree.structure(
              (state, dict.fromkeys(names, 0))))
      self.compile_s = time.perf_counter() - began
    self.state, metrics = run.programs[whole](*args)
    if isinstance(run.train_data, streaming.Stream) and \
        self.step + count < t.num_steps:  # read the next while this trains
      run.train_data.prefetch(self.step + count)
    if dispatched is not None:
      dispatched()
    metrics = jax.device_get(metrics)
    self.step = int(self.state.step)
    return {k: v[None, :count] for k, v in metrics.items()}

  def member_state(self, i: int) -> steps.TrainState:
    return self.state

  def per_member(self, fn: Callable) -> np.ndarray:
    return np.asarray([fn(self.state)])
