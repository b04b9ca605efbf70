"""What the loop does between chunks of train steps: the periodic actions.

Each action says when it is due (`due(step, end)`) and what it does then,
for every member of the stepper (lm_jax/loop/stepper.py: a lone run is one
member, a sweep's population several); the loop runs the chunk of steps up
to the nearest step any action is due at, then every action that is due,
in order. A new periodic action (a plot every N steps, an extra
evaluation) is a class here and an entry in
`lm_jax/loop/trainer.py: actions_for`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import ml_collections
import numpy as np

from lm_jax.errors import UserError
from lm_jax.loop import preemption
from lm_jax.loop.clock import Meter
from lm_jax.loop.setup import Member
from lm_jax.loop.stepper import Stepper
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

  def __call__(self, stepper: Stepper, step: int, metrics: dict) -> None:
    """Acts on the members at `step`; `metrics` (M, count): the chunk's."""
    raise NotImplementedError


def live(stepper: Stepper) -> Iterator[tuple[int, Member]]:
  """The members still training (not diverged), with their index."""
  return ((i, m) for i, m in enumerate(stepper.members)
          if m.diverged_at is None)


def _params_finite(state: steps.TrainState):
  return steps.all_finite(state.params)


def _skipped(state: steps.TrainState):
  return state.opt_state.total_notfinite


class CheckFinite(Action):
  """After every chunk: a member that diverged (`divergence`) stops. Alone,
  it raises NonFiniteLoss; in a population (`train_on`) it is marked
  (`Member.diverge`), neither evaluated nor saved again (its last good
  checkpoint stays), and the others train on."""

  def __init__(self, train_on: bool = False):
    self.train_on = train_on

  def __call__(self, stepper, step, metrics):
    finite = stepper.per_member(_params_finite)
    for i, m in live(stepper):
      skip = m.config.train.skip_nonfinite
      found = divergence(step, {k: v[i] for k, v in metrics.items()},
                         bool(finite[i]), skip)
      if found is None:
        continue
      if not self.train_on:
        skipped = int(stepper.per_member(_skipped)[i])
        raise NonFiniteLoss(diverged_message(*found, m.mngr, skip, skipped))
      m.diverge(found[0])
      print(f"member {m.name} diverged at step {m.diverged_at} ({found[1]} "
            "not finite); its last good checkpoint stays, the others train "
            "on", flush=True)


def _rate(train: ml_collections.ConfigDict, step: int, metrics: dict,
          i: int) -> float:
  """Member i's learning rate at its last step (`step` - 1): the
  schedule's, scaled by the step's decay where a budget clocks it."""
  rate = float(optimizers.lr_schedule(train)(step - 1))
  if "lr_factor" in metrics:
    rate *= float(metrics["lr_factor"][i, -1])
  return rate


class LogStep(Action):
  """Every log_every steps: each member's train loss, learning rate,
  gradient norm and throughput in its metrics.jsonl; then a progress line
  per member, or `report(step, records, steps_per_s)`'s."""

  def __init__(self, train: ml_collections.ConfigDict, meter: Meter,
               report: Callable | None = None):
    self.every, self.train, self.meter = train.log_every, train, meter
    self.report = report or self.step_lines

  def __call__(self, stepper, step, metrics):
    t = self.train
    rate = self.meter.rate(step)
    skipped = stepper.per_member(_skipped) if t.skip_nonfinite else None
    records = []
    for i, m in enumerate(stepper.members):
      record = dict(step=step, loss=float(metrics["loss"][i, -1]),
                    lr=_rate(m.config.train, step, metrics, i),
                    grad_norm=float(metrics["grad_norm"][i, -1]),
                    elapsed_s=m.clock.elapsed(),
                    train_s=m.clock.train_s)
      if rate:
        record["tokens_per_s"] = rate * t.batch_size * t.seq_len
      if skipped is not None:
        record["skipped_steps"] = int(skipped[i])
      m.log.write(**record)
      records.append(record)
    self.report(step, records, rate)
    self.meter.restart(step)

  def step_lines(self, step: int, records: list[dict], rate) -> None:
    for record in records:
      print(progress.step_line(step, self.train.num_steps, record,
                               self.meter.elapsed(), rate,
                               float(self.train.get("max_seconds", 0.0))),
            flush=True)


class Evaluate(Action):
  """Every eval_every steps: each live member's evaluation, checkpoint and
  record (`evaluate_and_save`), its last result kept (`Member.evaluated`);
  printed in full (the lines, the best step and the samples), or `brief`ly:
  the first line, after the member's name."""

  def __init__(self, train: ml_collections.ConfigDict, meter: Meter,
               brief: bool = False):
    self.every, self.meter, self.brief = train.eval_every, meter, brief

  def __call__(self, stepper, step, metrics):
    progress.phase(stepper.evaluating)
    for i, m in live(stepper):
      with m.clock.evaluating():
        m.evaluated, lines, texts = evaluate_and_save(
            stepper, m, stepper.member_state(i), step)
        if self.brief:
          print(f"  {m.name}: {lines[0]}", flush=True)
        else:
          print_evaluation(m, lines, texts)
    self.meter.restart(step)


class StopIfAsked(Action):
  """After every chunk: on SIGINT or SIGTERM, a checkpoint of each live
  member (unless the evaluation just saved one) and
  `preemption.Interrupted`."""

  def __init__(self, stop: preemption.StopOnSignal):
    self.stop = stop

  def __call__(self, stepper, step, metrics):
    if not self.stop.requested:
      return
    for i, m in live(stepper):
      if m.mngr.latest_step() != step:
        checkpoints.save(m.mngr, step, stepper.member_state(i),
                         metadata=m.clock.saved())
    raise preemption.Interrupted(self.stop.signum, step, stepper.workdir)


def divergence(step: int, metrics: dict, params_finite: bool,
               skip_nonfinite: bool) -> tuple[int, str] | None:
  """Where the chunk that ended at `step` diverged, and what is not finite
  there ("the loss is", ...); None if it did not.

  That is: a step with a non-finite loss or gradients (unless such steps
  are skipped), or non-finite parameters, which can then only come from
  too many skipped steps in a row (optimizers.MAX_CONSECUTIVE_SKIPS).
  """
  finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
  if skip_nonfinite or finite.all():
    return None if params_finite else (step, "the parameters are")
  first = int(np.argmin(finite))
  return step - len(finite) + first + 1, (
      "the loss is" if not np.isfinite(metrics["loss"][first])
      else "the gradients are")


def diverged_message(bad: int, what: str, mngr, skip_nonfinite: bool,
                     skipped: int) -> str:
  """NonFiniteLoss's message: where, what, the checkpoint kept, the fix."""
  latest = mngr.latest_step()
  kept = ("no checkpoint was saved yet" if latest is None else
          f"the last good checkpoint (step {latest}) is kept")
  fix = ("lower config.train.learning_rate or raise "
         "config.train.warmup_steps")
  if not skip_nonfinite:
    fix += ", or set config.train.skip_nonfinite=True to skip such steps"
  return (f"training diverged at step {bad}: {what} not finite "
          f"({skipped} steps skipped before); {kept}; {fix}")


def evaluate_and_save(stepper: Stepper, member: Member,
                      state: steps.TrainState, step: int
                      ) -> tuple[dict, list[str], dict[str, str]]:
  """The task's evaluation (`lm_jax.tasks`) of `member`, a checkpoint, and
  the record and samples in its logs; the record, the lines and samples.

  The model is evaluated and sampled at the optimiser's evaluation point
  (`optimizers.eval_params`: schedule-free AdamW's average). The record's
  elapsed_s is when the evaluated parameters were ready (this evaluation
  not included); eval_s the seconds spent evaluating before it.
  """
  clock = member.clock
  params = optimizers.eval_params(state.params, state.opt_state)
  record, lines, texts = stepper.task.evaluate(
      params, stepper.model, stepper.loaded, step, member.config)
  record.update(elapsed_s=clock.eval_started, eval_s=clock.eval_s,
                train_s=clock.train_s)
  # The record only once its checkpoint is committed: a failed save (a full
  # disk) leaves no val record of a checkpoint that does not exist.
  checkpoints.save(member.mngr, step, state, record["val_loss"],
                   clock.saved())
  member.log.write(**record)
  for name, text in texts.items():
    member.log.text(step, name, text)
  return record, lines, texts


def print_evaluation(member: Member, lines: list[str],
                     texts: dict[str, str]) -> None:
  """A lone run's evaluation: its lines, the best step, the samples."""
  print("\n".join(lines) + f" | best step {member.mngr.best_step()}",
        flush=True)
  for name, text in texts.items():
    print("-" * 20 + f" {name} " + "-" * 20)
    print(text)
    print("-" * 48, flush=True)
