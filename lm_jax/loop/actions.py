"""What the loop does between chunks of train steps: the periodic actions.

Each action says when it is due (`due(step, end)`) and what it does then;
the loop runs the chunk of steps up to the nearest step any action is due
at, then every action that is due, in order. A new periodic action (a
plot every N steps, an extra evaluation) is a class here and an entry in
`lm_jax/loop/trainer.py: actions_for`.
"""

from __future__ import annotations

import math

import numpy as np

from lm_jax.errors import UserError
from lm_jax.loop import preemption
from lm_jax.loop.clock import Clock, Meter
from lm_jax.loop.setup import Setup
from lm_jax.runs import checkpoints
from lm_jax.training import optimizers, steps
from lm_jax.views import progress


class NonFiniteLoss(UserError):
  """The loss, gradients or parameters became NaN or infinite: training
  stops, and the checkpoints saved before stay (none of them holds a NaN)."""


class Action:
  """Runs every `every` steps (0: after every chunk), and at the end."""
  every = 0

  def next_due(self, step: int) -> float:
    """The first step after `step` this action is due at."""
    return (step // self.every + 1) * self.every if self.every else math.inf

  def due(self, step: int, end: int) -> bool:
    return not self.every or step % self.every == 0 or step == end

  def __call__(self, run: Setup, state: steps.TrainState, step: int,
               metrics: dict) -> dict | None:
    raise NotImplementedError


class CheckFinite(Action):
  """After every chunk: stops the run if it diverged (`check_finite`)."""

  def __call__(self, run, state, step, metrics):
    check_finite(state, metrics, run.mngr, run.config.train.skip_nonfinite)


class LogStep(Action):
  """Every log_every steps: the train loss, learning rate, gradient norm
  and throughput, in metrics.jsonl and a printed line."""

  def __init__(self, run: Setup, clock: Clock, meter: Meter):
    self.every, self.clock, self.meter = run.config.train.log_every, clock, meter

  def __call__(self, run, state, step, metrics):
    t = run.config.train
    rate = self.meter.rate(step)
    record = dict(step=step, loss=float(metrics["loss"][-1]),
                  lr=float(optimizers.lr_schedule(t)(step - 1)),
                  grad_norm=float(metrics["grad_norm"][-1]),
                  elapsed_s=self.clock.elapsed())
    if rate:
      record["tokens_per_s"] = rate * t.batch_size * t.seq_len
    if t.skip_nonfinite:
      record["skipped_steps"] = steps.skipped_updates(state)
    run.log.write(**record)
    print(progress.step_line(step, t.num_steps, record,
                             self.meter.elapsed(), rate), flush=True)
    self.meter.restart(step)


class Evaluate(Action):
  """Every eval_every steps: the task's evaluation and samples, and a
  checkpoint (`evaluate_and_save`); the last result is the run's."""

  def __init__(self, run: Setup, clock: Clock, meter: Meter):
    self.every, self.clock, self.meter = run.config.train.eval_every, clock, meter
    self.result: dict = {}

  def __call__(self, run, state, step, metrics):
    progress.phase("evaluating")
    with self.clock.evaluating():
      self.result = evaluate_and_save(run, state, step, self.clock)
    self.meter.restart(step)


class StopIfAsked(Action):
  """After every chunk: on SIGINT or SIGTERM, a checkpoint (unless the
  evaluation just saved one) and `preemption.Interrupted`."""

  def __init__(self, stop: preemption.StopOnSignal, clock: Clock):
    self.stop, self.clock = stop, clock

  def __call__(self, run, state, step, metrics):
    if not self.stop.requested:
      return
    if run.mngr.latest_step() != step:
      checkpoints.save(run.mngr, step, state, metadata=self.clock.saved())
    raise preemption.Interrupted(self.stop.signum, step, run.workdir)


def check_finite(state: steps.TrainState, metrics: dict, mngr,
                 skip_nonfinite: bool) -> None:
  """Raises NonFiniteLoss if the chunk just run diverged.

  That is: a step with a non-finite loss or gradients (unless such steps
  are skipped), or non-finite parameters, which can then only come from
  too many skipped steps in a row (optimizers.MAX_CONSECUTIVE_SKIPS).
  """
  step = int(state.step)
  finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
  if skip_nonfinite or finite.all():
    if bool(steps.all_finite(state.params)):
      return
    bad, what = step, "the parameters are"
  else:
    first = int(np.argmin(finite))
    bad = step - len(finite) + first + 1
    what = ("the loss is" if not np.isfinite(metrics["loss"][first])
            else "the gradients are")
  latest = mngr.latest_step()
  kept = ("no checkpoint was saved yet" if latest is None else
          f"the last good checkpoint (step {latest}) is kept")
  fix = ("lower config.train.learning_rate or raise "
         "config.train.warmup_steps")
  if not skip_nonfinite:
    fix += ", or set config.train.skip_nonfinite=True to skip such steps"
  raise NonFiniteLoss(
      f"training diverged at step {bad}: {what} not finite "
      f"({steps.skipped_updates(state)} steps skipped before); {kept}; {fix}")


def evaluate_and_save(run: Setup, state: steps.TrainState, step: int,
                      clock: Clock) -> dict:
  """The task's evaluation (`lm_jax.tasks`), a checkpoint, the record in
  the logs, and the task's samples printed.

  The model is evaluated and sampled at the optimiser's evaluation point
  (`optimizers.eval_params`: schedule-free AdamW's average). The record's
  elapsed_s is when the evaluated parameters were ready (this evaluation
  not included); eval_s the seconds spent evaluating before it.
  """
  params = optimizers.eval_params(state.params, state.opt_state)
  record, lines, texts = run.task.evaluate(params, run.model, run.loaded,
                                           step, run.config)
  record.update(elapsed_s=clock.eval_started, eval_s=clock.eval_s)
  # The record only once its checkpoint is committed: a failed save (a full
  # disk) leaves no val record of a checkpoint that does not exist.
  checkpoints.save(run.mngr, step, state, record["val_loss"], clock.saved())
  run.log.write(**record)
  print("\n".join(lines) + f" | best step {run.mngr.best_step()}", flush=True)
  for name, text in texts.items():
    print("-" * 20 + f" {name} " + "-" * 20)
    print(text)
    run.log.text(step, name, text)
    print("-" * 48, flush=True)
  return record
