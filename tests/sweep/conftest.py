"""Shared helpers of the sweep tests: a tiny config, its members, a sweep
of them and the losses a run wrote."""

import json
import pathlib

from configs import char_tf
from lm_jax.sweep import grid, plan, population


def tiny():
  """char_tf:smoke cut to 8 steps without samples: a few seconds."""
  c = char_tf.get_config("smoke")
  c.train.update(num_steps=8, log_every=4, eval_every=4, sample_tokens=0)
  return c


def members(workdir, sets, zipped=False, base=tiny):
  return grid.make_members(base, grid.parse_sets(sets), zipped,
                           pathlib.Path(workdir))


class StopAfter:
  """A StopOnSignal whose signal arrives after `chunks` chunks of steps."""

  def __init__(self, chunks: int):
    self.chunks, self.signum = chunks, None

  @property
  def requested(self) -> bool:
    self.chunks -= 1
    if self.chunks < 0:
      self.signum = 15
    return self.signum is not None


def sweep(workdir, sets, stop=None, base=tiny):
  ms = members(workdir, sets, base=base)
  population.train_groups(plan.make_plan(ms), stop or StopAfter(10**9), 0.0,
                          lambda *a: None)
  return ms


def losses(workdir) -> list:
  """((step, "loss" or "val_loss"), value) of each record of a run."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(l) for l in lines if l]
  return [((r["step"], k), r[k]) for r in records
          for k in ("loss", "val_loss") if k in r]
