"""Hyperparameters as data: the settings a population's members may differ
in while sharing one compiled program.

A lone run bakes its learning rate, betas and clipping into the program as
constants (`optimizers.make_optimizer`). A member of a population carries
them as arrays instead (one row per member), and the step builds each
member's optimiser from its own row inside the jitted, vmapped function,
which is what `optax.inject_hyperparams` does inside its update. The
optimiser state keeps the lone run's layout, so a member's checkpoint is an
ordinary run's (inject_hyperparams would add its own state around it).

Settings that change the program stay out: the dropout rate (Flax's
Dropout tests `rate == 0` while tracing), z-loss (`steps.loss_fn` tests it
while tracing), num_steps (the loop's length), and everything that changes
a shape.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

from lm_jax.training import optimizers

# The keys a population's members may differ in.
MEMBER_SETTINGS = (
    "seed", "train.learning_rate", "train.weight_decay", "train.b1",
    "train.b2", "train.grad_clip", "train.warmup_steps", "train.min_lr_ratio",
    "train.decay_fraction", "train.muon_learning_rate", "train.muon_momentum")
# The ones the optimiser reads (the seed gives the keys instead).
NUMBERS = tuple(k.partition(".")[2] for k in MEMBER_SETTINGS if k != "seed")


def numbers(train: ml_collections.ConfigDict) -> dict[str, float]:
  """A member's optimiser numbers, as floats."""
  return {name: float(train[name]) for name in NUMBERS}


class Settings:
  """config.train with the member's numbers (arrays) in place of its own:
  what `optimizers.build_optimizer` reads."""

  def __init__(self, train: ml_collections.ConfigDict, hp: dict):
    self._train, self._hp = train, hp

  def __getattr__(self, name: str):
    if name in self._hp:
      return self._hp[name]
    return getattr(self._train, name)


def _linear(start, end, steps):
  """optax.linear_schedule(start, end, steps), steps an array >= 1."""
  return lambda count: (start - end) * (
      1 - jnp.clip(count, 0, steps) / steps) + end


def _join(schedules, boundaries):
  """optax.join_schedules with boundaries that may be arrays."""
  def schedule(step):
    out = schedules[0](step)
    for boundary, s in zip(boundaries, schedules[1:]):
      out = jnp.where(step < boundary, out, s(step - boundary))
    return out
  return schedule


def lr_schedule(train: ml_collections.ConfigDict, hp: dict) -> optax.Schedule:
  """`optimizers.lr_schedule` with the member's numbers as arrays (the same
  formulas as optax's schedules, which test their lengths in Python)."""
  peak, warmup = hp["learning_rate"], hp["warmup_steps"]
  low = peak * hp["min_lr_ratio"]
  n = train.num_steps
  ramp = _linear(0.0, peak, jnp.maximum(warmup, 1))
  kind = train.schedule
  if optimizers.by_budget(train):  # the step scales by its Decay instead
    kind = "constant"
  if kind == "cosine":
    decay_steps = jnp.maximum(n, warmup + 1) - warmup
    alpha = low / peak

    def cosine(count):
      count = jnp.minimum(count, decay_steps)
      return peak * ((1 - alpha) * 0.5 * (1 + jnp.cos(
          jnp.pi * count / decay_steps)) + alpha)
    return _join([ramp, cosine], [warmup])
  if kind == "constant":
    return _join([ramp, lambda count: peak], [warmup])
  decay = jnp.maximum(1, jnp.round(hp["decay_fraction"] * n))
  start = jnp.maximum(warmup, n - decay)
  return _join([ramp, lambda count: peak,
                _linear(peak, low, jnp.maximum(n - start, 1))],
               [warmup, start])


def decay(train: ml_collections.ConfigDict, hp: dict
          ) -> optimizers.Decay | None:
  """`optimizers.budget_decay` with the member's numbers as arrays."""
  return optimizers.budget_decay(Settings(train, hp))


def optimizer(train: ml_collections.ConfigDict, hp: dict
              ) -> optax.GradientTransformation:
  """A member's optimiser, its numbers `hp` (arrays, traced in the step);
  `train` gives the rest (the optimiser and schedule kinds, num_steps)."""
  return optimizers.build_optimizer(Settings(train, hp),
                                    lr_schedule(train, hp))
