"""The wall clock of a run, as metrics.jsonl and checkpoints hold it."""

from __future__ import annotations

import contextlib
import time


class Clock:
  """Wall seconds of a run, as metrics.jsonl and checkpoints hold them.

  `elapsed()`: seconds since the command started, plus what the run had
  spent before the checkpoint it resumed from; `eval_s` of them were spent
  in evaluations (the loss, the sample, the checkpoint). `train_s`: the
  seconds spent in train steps alone (`lm_jax/loop/trainer.py: train_loop`
  counts them: neither start-up, compiling nor evaluations), what
  config.train.max_seconds budgets.
  """

  def __init__(self, started: float):
    self.started, self.offset, self.eval_s = started, 0.0, 0.0
    self.train_s = 0.0
    self.eval_started: float | None = None  # while evaluating
    # Start-up: seconds since the command started at the end of each phase
    # before the first train step, in order ({"imports": 1.1, ...}).
    self.marks: dict[str, float] = {}
    self.mark("imports")

  def mark(self, phase: str) -> None:
    """Notes that start-up phase `phase` has just ended."""
    self.marks[phase] = time.perf_counter() - self.started

  def resume(self, saved: dict) -> None:
    """Continues from a checkpoint's `saved()` ({} from older code: 0)."""
    self.offset = float(saved.get("elapsed_s", 0.0))
    self.eval_s = float(saved.get("eval_s", 0.0))
    self.train_s = float(saved.get("train_s", 0.0))

  def elapsed(self) -> float:
    return self.offset + time.perf_counter() - self.started

  def saved(self) -> dict:
    """What a checkpoint saved now stores, the evaluation in flight counted."""
    now = self.elapsed()
    evaluating = 0.0 if self.eval_started is None else now - self.eval_started
    return {"elapsed_s": now, "eval_s": self.eval_s + evaluating,
            "train_s": self.train_s}

  @contextlib.contextmanager
  def evaluating(self):
    self.eval_started = self.elapsed()
    try:
      yield
    finally:
      self.eval_s += self.elapsed() - self.eval_started
      self.eval_started = None


class StepTimer:
  """The training seconds of each chunk of steps, for `Clock.train_s`.

  The first chunk a process runs is mostly compiling: its steps are
  counted at the next chunk's seconds per step instead (at their measured
  time only if no chunk follows). `share`: the part of a chunk's wall
  time that is one member's (1 alone; a population's members share their
  device, lm_jax/loop/stepper.py: Stepper.share).
  """

  def __init__(self, share: float = 1.0):
    self.share, self.pending, self.pending_s = share, 0, 0.0

  def seconds(self, count: int, seconds: float, first: bool) -> float:
    """The training seconds of a chunk of `count` steps that took
    `seconds` (`first`: the process's first)."""
    if first:
      self.pending, self.pending_s = count, seconds
      return 0.0
    extra = self.pending * seconds / count
    self.pending = 0
    return (seconds + extra) * self.share

  def left_over(self) -> float:
    """The first chunk's seconds as measured, if no chunk followed it."""
    out = self.pending_s * self.share if self.pending else 0.0
    self.pending = 0
    return out


class Meter:
  """Training throughput: steps per second since the last `restart` (after
  compiling, a log line or an evaluation, so that neither is counted), and
  the seconds since training started (the progress lines' elapsed)."""

  def __init__(self, step: int = 0):
    self.started = time.perf_counter()
    self.restart(step)

  def elapsed(self) -> float:
    return time.perf_counter() - self.started

  def restart(self, step: int) -> None:
    self.tick, self.tick_step = time.perf_counter(), step

  def rate(self, step: int) -> float | None:
    """Steps per second since the restart; None before any step."""
    if step <= self.tick_step:
      return None
    return (step - self.tick_step) / (time.perf_counter() - self.tick)
