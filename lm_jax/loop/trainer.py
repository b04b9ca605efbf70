"""The training loop: `train_and_evaluate(config, workdir)`.

Set-up (lm_jax/loop/setup.py: the data, model and state, resumed from the
latest checkpoint), then the loop: chunks of jitted train steps on device
(`steps.train_steps`), each up to the next step a periodic action is due
at, then those actions (lm_jax/loop/actions.py: log, evaluate + sample +
checkpoint, stop on a signal). Running it again on the same workdir
resumes, exactly as if the run had never stopped.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time

import jax
import ml_collections

from lm_jax.loop import actions as actions_lib
from lm_jax.loop import preemption
from lm_jax.loop.clock import Clock, Meter
from lm_jax.loop.setup import Setup, set_up
from lm_jax.training import parallel, programs, steps
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
    run = set_up(config, pathlib.Path(workdir), hold, clock)
    evaluate = actions_lib.Evaluate(run, clock, meter)
    train_loop(run, [actions_lib.CheckFinite(),
                     actions_lib.LogStep(run, clock, meter), evaluate,
                     actions_lib.StopIfAsked(stop, clock)],
               meter, stop_at, clock)
    return evaluate.result


def train_loop(run: Setup, actions: list[actions_lib.Action], meter: Meter,
               stop_at: int | None = None, clock: Clock | None = None
               ) -> None:
  """Trains from run.state to num_steps (or `stop_at`), running `actions`
  where they are due, and prints the run's summary; with `clock`, also the
  start-up's phases, once the first train step is under way."""
  t = run.config.train
  state, step = run.state, int(run.state.step)
  end = min(t.num_steps, stop_at or t.num_steps)
  compiled = False
  while step < end:
    if not compiled:
      progress.phase("compiling the train step")
    count = min(t.steps_per_call, end - step,
                min(a.next_due(step) for a in actions) - step)
    dispatched = None
    if clock is not None and not compiled:
      dispatched = lambda: clock.mark("first step")  # noqa: E731
    state, metrics = train_chunk(run, state, count, dispatched)
    step = int(state.step)
    if not compiled:  # time from here: the first call was mostly compiling
      meter.restart(step)
      compiled = True
      if clock is not None:
        print(progress.startup_line(clock.marks))
    for action in actions:
      if action.due(step, end):
        action(run, state, step, metrics)
  seconds = meter.elapsed() if compiled else None
  print(progress.run_summary(run.workdir, step, t.num_steps,
                             t.batch_size * t.seq_len, seconds))


def train_chunk(run: Setup, state: steps.TrainState, count: int,
                dispatched=None) -> tuple[steps.TrainState, dict]:
  """`count` train steps in one jitted call; their metrics on the host.

  `dispatched()`, if given, is called once the call is compiled (or read
  from the compilation cache) and running, before its results are awaited.
  """
  t = run.config.train
  # A whole call is the plain program; every shorter one shares another.
  whole = count == t.steps_per_call
  args = (state, run.train_data, run.seed_key, None if whole else count)
  if whole not in run.programs:  # the first call of each: read or compile
    run.programs[whole] = programs.compiled(
        "train_steps", steps.train_steps, args, dict(
            batch_size=t.batch_size, seq_len=t.seq_len,
            num_steps=t.steps_per_call, grad_accum_steps=t.grad_accum_steps,
            batch_sharding=parallel.batch_sharding(run.mesh)),
        settings=dict(model=run.config.model.to_dict(), train=t.to_dict()),
        # The output: the state as it came in, and the metrics by name.
        describe_out=lambda tree: sorted(tree.unflatten(
            range(tree.num_leaves))[1]),
        rebuild_out=lambda names: jax.tree.structure(
            (state, dict.fromkeys(names, 0))))
  state, metrics = run.programs[whole](*args)
  if dispatched is not None:
    dispatched()
  return state, {k: v[:count] for k, v in jax.device_get(metrics).items()}
