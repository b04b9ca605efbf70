"""Learning-rate schedules and optimisers: `config.train.schedule` and
`config.train.optimizer`.

Schedules (all start with a linear warmup from 0 over warmup_steps):
  cosine    cosine decay to min_lr_ratio * learning_rate at num_steps.
  wsd       warmup-stable-decay: the peak rate until the last
            decay_fraction of the steps, then a *linear* decay to
            min_lr_ratio * learning_rate at num_steps.
  constant  the peak rate to the end (what schedule-free AdamW wants).

The clock the decay follows (`config.train.schedule_clock`):
  steps     the step count, to num_steps (optax's schedules, as above).
  budget    the share of config.train.max_seconds trained so far, or of
            num_steps if that is further: a budgeted run decays to its
            end on any machine, however many steps it fits. The
            optimiser keeps the warmup and the peak; the step scales
            each update by `Decay` (AdamW's and Muon's updates, weight
            decay included, are linear in the learning rate, so this is
            the same as scaling the rate). The loop feeds the time
            (lm_jax/loop/trainer.py: budget_clock).

Optimisers (each inside the same clipping and `apply_if_finite` wrapper, so
a run's checkpoint has one layout per optimiser):
  adamw          AdamW, weight decay on every array of rank >= 2.
  muon           Muon (`optax.contrib.muon`, Newton-Schulz orthogonalised
                 momentum) for the hidden matrices at muon_learning_rate;
                 AdamW as above for the rest (embeddings, head, norms,
                 biases). See `is_hidden_matrix`.
  schedule_free  schedule-free AdamW (`optax.contrib.schedule_free`): the
                 parameters it trains on are not the ones to evaluate;
                 `eval_params` gives those.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax import contrib

SCHEDULES = ("cosine", "wsd", "constant")
CLOCKS = ("steps", "budget")
OPTIMIZERS = ("adamw", "muon", "schedule_free")
# With config.train.skip_nonfinite, this many non-finite updates in a row
# mean the run has diverged, not hit a bad batch: the next one is applied,
# its NaN reaches the parameters, and the trainer stops.
MAX_CONSECUTIVE_SKIPS = 10


def lr_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate at each step (see the module docstring)."""
  peak, warmup = train.learning_rate, train.warmup_steps
  low = peak * train.min_lr_ratio
  schedule = train.schedule
  if by_budget(train):  # the step scales by Decay instead
    schedule = "constant"
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(train.num_steps, warmup + 1), end_value=low)
  ramp = optax.linear_schedule(0.0, peak, max(warmup, 1))
  if schedule == "constant":
    return optax.join_schedules([ramp, optax.constant_schedule(peak)],
                                [warmup])
  decay = max(1, round(train.decay_fraction * train.num_steps))
  start = max(warmup, train.num_steps - decay)
  return optax.join_schedules(
      [ramp, optax.constant_schedule(peak),
       optax.linear_schedule(peak, low, max(train.num_steps - start, 1))],
      [warmup, start])


def by_budget(train) -> bool:
  """Whether the decay follows the budget (config.train.schedule_clock)."""
  return train.get("schedule_clock", "steps") == "budget"


@dataclasses.dataclass(frozen=True)
class Decay:
  """The learning rate's decay as a factor of the peak, by progress: what
  a budget-clocked step scales its update by (the module docstring).

  `progress` of step s is max(a + b * s, s / num_steps): (a, b), the share
  of the budget spent as a line in the step (`clock`, from the loop). The
  numbers may be traced arrays (a population member's).
  """
  schedule: str
  decay_fraction: Any
  min_lr_ratio: Any
  num_steps: int

  def __call__(self, step: jax.Array, clock: jax.Array) -> jax.Array:
    progress = jnp.clip(jnp.maximum(clock[0] + clock[1] * step,
                                    step / self.num_steps), 0.0, 1.0)
    low = self.min_lr_ratio
    if self.schedule == "cosine":
      return low + (1 - low) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    if self.schedule == "wsd":
      start = 1 - self.decay_fraction
      return 1 - (1 - low) * jnp.clip((progress - start) /
                                      self.decay_fraction, 0.0, 1.0)
    return jnp.ones_like(progress)


def budget_decay(train) -> Decay | None:
  """The step's Decay for a budget-clocked run; None for a step-clocked
  one (its optimiser's schedule decays)."""
  if not by_budget(train):
    return None
  return Decay(train.schedule, train.decay_fraction, train.min_lr_ratio,
               train.num_steps)


def is_hidden_matrix(path: tuple, leaf: jax.Array) -> bool:
  """A kernel of rank >= 2 outside the output head: what Muon trains.

  Embeddings (`embedding`, `pos_embed`), the head, norms and biases are not
  named `*kernel`, or sit under `head`. A kernel's last two axes are
  (fan in, fan out); leading axes (the layer axis of scanned layers, L)
  are a batch of matrices, each orthogonalised on its own.
  """
  names = [str(getattr(k, "key", k)) for k in path]
  return (leaf.ndim >= 2 and names[-1].endswith("kernel")
          and "head" not in names)


def _adamw(train: ml_collections.ConfigDict, learning_rate, b1: float
           ) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.adamw(learning_rate, b1=b1, b2=train.b2,
                     weight_decay=train.weight_decay, mask=decay_mask)


def _muon(train: ml_collections.ConfigDict, schedule: optax.Schedule
          ) -> optax.GradientTransformation:
  ratio = train.muon_learning_rate / train.learning_rate
  dims = contrib.MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: "muon" if is_hidden_matrix(path, p) else "adamw",
      params)
  # Muon multiplies its decay by its own (larger) rate: dividing by the
  # ratio shrinks the matrices per step as much as AdamW's decay would.
  matrices = contrib.muon(
      lambda step: schedule(step) * ratio,
      beta=train.muon_momentum,
      weight_decay=train.weight_decay / ratio,
      muon_weight_dimension_numbers=lambda params: jax.tree.map(
          lambda _: dims, params))
  return optax.partition({"muon": matrices,
                          "adamw": _adamw(train, schedule, train.b1)}, labels)


def _schedule_free(train: ml_collections.ConfigDict, schedule: optax.Schedule
                   ) -> optax.GradientTransformation:
  # As optax.contrib.schedule_free_adamw, with the decay on matrices only.
  return contrib.schedule_free(_adamw(train, schedule, 0.0), schedule,
                               b1=train.b1)


def make_optimizer(train: ml_collections.ConfigDict
                   ) -> optax.GradientTransformation:
  """config.train.optimizer after global-norm clipping.

  An update whose gradients are not finite is dropped (parameters and
  moments unchanged) and counted, so a NaN never reaches a checkpoint; the
  trainer stops at the first one unless config.train.skip_nonfinite. The
  wrapper is always there so that checkpoints have one layout either way.

  The same settings give the same object: the train state holds it as a
  static field, so a second training in one process (a resume, a notebook)
  finds the jitted step already compiled instead of tracing it again.
  """
  return _make_optimizer(json.dumps(train.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _make_optimizer(settings: str) -> optax.GradientTransformation:
  train = ml_collections.ConfigDict(json.loads(settings))
  return build_optimizer(train, lr_schedule(train))


def build_optimizer(train, schedule: optax.Schedule
                    ) -> optax.GradientTransformation:
  """`make_optimizer` with the learning rate at each step from `schedule`.

  Its numbers may be traced arrays (`lm_jax.sweep.hyper`: a population's
  rates, betas and clipping as data); the state's layout does not depend
  on them.
  """
  build = {"adamw": lambda t, s: _adamw(t, s, t.b1),
           "muon": _muon, "schedule_free": _schedule_free}
  return optax.apply_if_finite(optax.chain(
      optax.clip_by_global_norm(train.grad_clip),
      build[train.optimizer](train, schedule)),
      max_consecutive_errors=MAX_CONSECUTIVE_SKIPS)


def evaluates_elsewhere(train: ml_collections.ConfigDict) -> bool:
  """Whether the optimiser's evaluation point is not its parameters."""
  return train.optimizer == "schedule_free"


def eval_params(params: Any, opt_state: Any) -> Any:
  """The parameters to evaluate, sample and export.

  Schedule-free AdamW trains at an interpolation y of two sequences and
  evaluates at their average x (`optax.contrib.schedule_free_eval_params`);
  every other optimiser evaluates where it trains: its state holds no
  ScheduleFreeState and `params` come back unchanged.
  """
  is_sf = lambda node: isinstance(node, contrib.ScheduleFreeState)
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_sf) if is_sf(s)]
  if found:
    return contrib.schedule_free_eval_params(found[0], params)
  return params


def hidden_matrices(params) -> list[str]:
  """The paths of the parameters Muon trains (`is_hidden_matrix`)."""
  return [jax.tree_util.keystr(path) for path, leaf in
          jax.tree_util.tree_flatten_with_path(params)[0]
          if is_hidden_matrix(path, leaf)]
