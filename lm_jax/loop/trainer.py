"""The training loop: `train_and_evaluate(config, workdir)`.

Set-up (lm_jax/loop/setup.py: the data, model and state, resumed from the
latest checkpoint), then the loop: chunks of jitted train steps on device
(`steps.train_steps`), each up to the next step a periodic action is due
at, then those actions (lm_jax/loop/actions.py: log, evaluate + sample +
checkpoint, stop on a signal). Running it again on the same workdir
resumes, exactly as if the run had never stopped. A sweep's population
goes through the same loop and actions, its members stacked
(lm_jax/loop/stepper.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import time
from typing import Callable

import ml_collections
import numpy as np

from lm_jax.loop import actions as actions_lib
from lm_jax.loop import preemption
from lm_jax.loop.clock import Clock, Meter, StepTimer
from lm_jax.loop.setup import set_up
from lm_jax.loop.stepper import Lone, Stepper
from lm_jax.tasks.base import NEXT_TOKEN_METRIC
from lm_jax.training import optimizers
from lm_jax.views import progress


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike,
                       stop_at: int | None = None,
                       started: float | None = None) -> dict:
  """Trains `config` in `workdir` to config.train.num_steps; returns last eval.

  `started`: the `time.perf_counter()` the command started at, where its
  wall clock (metrics.jsonl's elapsed_s) starts; None: at this call.

  `stop_at` ends this call early at that step (evaluating and saving there);
  calling again resumes, exactly as if the run had never stopped. On SIGINT
  or SIGTERM it saves a checkpoint after the chunk of steps in flight and
  raises preemption.Interrupted.
  """
  clock = Clock(time.perf_counter() if started is None else started)
  meter = Meter()
  with preemption.StopOnSignal() as stop, contextlib.ExitStack() as hold:
    run = Lone(set_up(config, pathlib.Path(workdir), hold, clock), clock)
    train_loop(run, actions_for(config.train, meter, stop), meter, stop_at,
               clock)
    return run.members[0].evaluated


def actions_for(train: ml_collections.ConfigDict, meter: Meter,
                stop: preemption.StopOnSignal,
                report: Callable | None = None) -> list[actions_lib.Action]:
  """The periodic actions of a run, in order: the divergence check, the
  log, the evaluation, the stop on a signal.

  `report(step, records, steps_per_s)`, for a population: prints its
  progress line in place of a line per member; then a member that
  diverges stops alone, and each evaluation prints one line.
  """
  population = report is not None
  return [actions_lib.CheckFinite(train_on=population),
          actions_lib.LogStep(train, meter, report),
          actions_lib.Evaluate(train, meter, brief=population),
          actions_lib.StopIfAsked(stop)]


def trained_s(stepper: Stepper) -> float:
  """The training seconds of the members (those of a population are
  equal: they step together)."""
  return min(m.clock.train_s for m in stepper.members)


def budget_clock(train: ml_collections.ConfigDict, trained: float,
                 step: int, per_step: float) -> np.ndarray | None:
  """A budget-clocked run's line for its next chunk, (a, b): the share of
  config.train.max_seconds spent by step s is a + b * s, from the seconds
  `trained` by `step` and the seconds per step measured (0 before any:
  the share then stays where it is); `optimizers.Decay` reads it. None
  for a step-clocked run."""
  if not optimizers.by_budget(train):
    return None
  budget = float(train.max_seconds)
  b = per_step / budget
  return np.asarray([trained / budget - b * step, b], np.float32)


def train_loop(stepper: Stepper, actions: list[actions_lib.Action],
               meter: Meter, stop_at: int | None = None,
               clock: Clock | None = None) -> None:
  """Trains the stepper's members from their step to num_steps (or
  `stop_at`), running `actions` where they are due.

  `clock`, a command's lone run's: prints the start-up's phases, once the
  first train step is under way, and the run's summary at the end.
  """
  t = stepper.config.train
  step, end = stepper.step, min(t.num_steps, stop_at or t.num_steps)
  budget, timer = float(t.get("max_seconds", 0.0)), StepTimer(stepper.share)
  if budget and step < end and trained_s(stepper) >= budget:
    print(f"the budget of {budget:g} training seconds was spent at step "
          f"{step} (config.train.max_seconds): nothing more to train")
    end = step
  compiled = False
  per_step = 0.0  # a member's training seconds per step, once measured
  while step < end:
    if not compiled:
      progress.phase(stepper.compiling)
    count = min(t.steps_per_call, end - step,
                min(a.next_due(step) for a in actions) - step)
    if budget and per_step:  # the chunk that reaches the budget stops there
      count = min(count, max(1, math.ceil(
          (budget - trained_s(stepper)) / per_step)))
    dispatched = None
    if clock is not None and not compiled:
      dispatched = lambda: clock.mark("first step")  # noqa: E731
    began = time.perf_counter()
    metrics = stepper.advance(count, dispatched, budget_clock(
        t, trained_s(stepper), step, per_step))
    took = time.perf_counter() - began
    if compiled:  # a later program's compiling is not training either
      took -= stepper.compile_s
      per_step = took * stepper.share / count
    spent = timer.seconds(count, took, not compiled)
    for member in stepper.members:
      member.clock.train_s += spent
    step = stepper.step
    if step >= end:  # the first chunk was the only one: as measured
      spent = timer.left_over()
      for member in stepper.members:
        member.clock.train_s += spent
    if budget and step < end and trained_s(stepper) >= budget:
      print(f"budget reached: {trained_s(stepper):.1f} training seconds at "
            f"step {step} (config.train.max_seconds={budget:g}); evaluating "
            "and saving there", flush=True)
      end = step
    if not compiled:  # time from here: the first call was mostly compiling
      meter.restart(step)
      compiled = True
      if clock is None:  # a population (a lone run's start-up line says it)
        progress.took(stepper.compiling, time.perf_counter() - began)
      if clock is not None:
        print(progress.startup_line(clock.marks))
    for action in actions:
      if action.due(step, end):
        action(stepper, step, metrics)
  if clock is not None:
    seconds = meter.elapsed() if compiled else None
    metric = stepper.task.metric(stepper.config)
    print(progress.run_summary(
        stepper.workdir, step, t.num_steps, t.batch_size * t.seq_len,
        seconds, "" if metric == NEXT_TOKEN_METRIC else metric))
