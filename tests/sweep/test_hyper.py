"""Hyperparameters as data (lm_jax/sweep/hyper.py): a member's traced
learning-rate schedule equals a lone run's."""

import jax
import numpy as np
import pytest

from lm_jax.sweep import hyper
from lm_jax.training import optimizers

from sweep.conftest import tiny


# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("schedule", optimizers.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 3])
def test_traced_schedule_equals_the_lone_one(schedule, warmup):
  train = tiny().train
  train.update(schedule=schedule, warmup_steps=warmup, num_steps=20,
               decay_fraction=0.3)
  hp = {k: np.float32(v) for k, v in hyper.numbers(train).items()}
  traced = jax.jit(lambda s: hyper.lr_schedule(train, hp)(s))
  lone = optimizers.lr_schedule(train)
  for s in range(25):
    np.testing.assert_allclose(traced(s), lone(s), rtol=1e-6, atol=1e-12)
