"""The wall clock of a run, as metrics.jsonl and checkpoints hold it."""

from __future__ import annotations

import contextlib
import time


class Clock:
  """Wall seconds of a run, as metrics.jsonl and checkpoints hold them.

  `elapsed()`: seconds since the command started, plus what the run had
  spent before the checkpoint it resumed from; `eval_s` of them were spent
  in evaluations (the loss, the sample, the checkpoint), so elapsed minus
  eval_s is the time spent training.
  """

  def __init__(self, started: float):
    self.started, self.offset, self.eval_s = started, 0.0, 0.0
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

  def elapsed(self) -> float:
    return self.offset + time.perf_counter() - self.started

  def saved(self) -> dict:
    """What a checkpoint saved now stores, the evaluation in flight counted."""
    now = self.elapsed()
    evaluating = 0.0 if self.eval_started is None else now - self.eval_started
    return {"elapsed_s": now, "eval_s": self.eval_s + evaluating}

  @contextlib.contextmanager
  def evaluating(self):
    self.eval_started = self.elapsed()
    try:
      yield
    finally:
      self.eval_s += self.elapsed() - self.eval_started
      self.eval_started = None


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
