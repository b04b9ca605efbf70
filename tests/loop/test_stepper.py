"""The stepper of a lone run (lm_jax/loop/stepper.py: Lone): a whole call
runs the plain program and a shorter one the program that takes its
count, each made once; the metrics come back (1, count), through fakes."""

import pathlib
import time
import types

import ml_collections
import numpy as np

from lm_jax.loop.clock import Clock
from lm_jax.loop.stepper import Lone


def test_a_lone_run_advances_by_its_programs_and_is_its_one_member():
  calls = []

  def program(state, data, key, count, clock):
    assert clock is None  # a step-clocked run
    calls.append(count)
    steps = 4 if count is None else count
    metrics = {"loss": np.arange(4.0)}  # a whole call's length, always
    return types.SimpleNamespace(step=state.step + steps), metrics

  config = ml_collections.ConfigDict(dict(train=dict(steps_per_call=4)))
  run = types.SimpleNamespace(
      config=config, workdir=pathlib.Path("/runs/tiny"), task="task",
      loaded="loaded", model="model", state=types.SimpleNamespace(step=8),
      train_data="data", seed_key="key", mngr="mngr", log="log",
      programs={True: program, False: program})
  lone = Lone(run, Clock(time.perf_counter()))
  assert lone.step == 8 and [m.name for m in lone.members] == ["tiny"]
  assert (lone.members[0].mngr, lone.members[0].log) == ("mngr", "log")
  dispatched = []
  metrics = lone.advance(4, lambda: dispatched.append(lone.step))
  assert lone.step == 12 and dispatched == [8]  # called before the wait
  np.testing.assert_array_equal(metrics["loss"], [[0.0, 1.0, 2.0, 3.0]])
  assert lone.advance(3)["loss"].shape == (1, 3) and lone.step == 15
  assert calls == [None, 3]  # the whole program, then the counted one
  assert lone.member_state(0) is lone.state
  np.testing.assert_array_equal(lone.per_member(lambda s: s.step), [15])
