"""Fakes shared by the loop's tests: an action that records when it ran, a
train state as the checkpoints see it, and a checkpoint manager."""

import dataclasses
import types

from lm_jax.loop import actions


class Recorder(actions.Action):
  def __init__(self, every, seen):
    self.every, self.seen = every, seen

  def __call__(self, stepper, step, metrics):
    self.seen.append((self.every, step))


@dataclasses.dataclass
class State:
  """A train state as the checkpoints see it."""
  step: int
  params: dict
  opt_state: types.SimpleNamespace


class Mngr:
  """A checkpoint manager that keeps the steps saved."""

  def __init__(self, latest=None):
    self.saved = [] if latest is None else [latest]

  def latest_step(self):
    return self.saved[-1] if self.saved else None

  def best_step(self):
    return self.latest_step()

  def save(self, step, **kwargs):
    self.saved.append(step)

  def wait_until_finished(self):
    pass
