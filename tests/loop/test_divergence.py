"""lm_jax/loop/actions.py: CheckFinite on real runs: a diverged run stops at its
step with its last good checkpoint; skipped steps are counted."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.loop import actions, trainer
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import steps

from conftest import run_command, train_flags


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(dict(sample_tokens=0, **train))
  return smoke_config


def _params(workdir, step=None):
  return rundir.load_run(workdir, step).params


@pytest.fixture
def poisoned_loss(monkeypatch):
  """Makes the loss infinite on about 30% of steps, chosen by the dropout
  key, so a function of (seed, step); returns step -> poisoned?"""
  clean = steps.loss_fn

  def loss_fn(params, model, x, y, dropout_key, carry=None, z_loss=0.0,
              objective=steps.NEXT_TOKEN):
    poison = jax.random.bernoulli(jax.random.fold_in(dropout_key, 7), 0.3)
    loss, carry = clean(params, model, x, y, dropout_key, carry, z_loss,
                        objective)
    return loss * jnp.where(poison, jnp.inf, 1.0), carry

  def poisoned(seed: int, step: int) -> bool:
    seed_key = jax.random.split(jax.random.key(seed))[1]
    dropout_key = steps.step_keys(seed_key, step)[1]
    return bool(jax.random.bernoulli(jax.random.fold_in(dropout_key, 7), 0.3))

  jax.clear_caches()  # retrace the train steps with the poisoned loss
  monkeypatch.setattr(steps, "loss_fn", loss_fn)
  yield poisoned
  monkeypatch.undo()
  jax.clear_caches()


@pytest.mark.slow
def test_nonfinite_loss_stops_at_its_step_keeping_the_last_good_checkpoint(
    tmp_path, text_file, smoke_config, poisoned_loss):
  config = _config(smoke_config, text_file, num_steps=40, eval_every=2,
                   log_every=2, steps_per_call=2)
  # A seed whose first poisoned update comes after a checkpoint.
  first_bad = {seed: next(s for s in range(40) if poisoned_loss(seed, s))
               for seed in range(10)}
  config.seed = next(seed for seed, s in first_bad.items() if s >= 2)
  first_bad = first_bad[config.seed]
  with pytest.raises(actions.NonFiniteLoss) as e:
    trainer.train_and_evaluate(config, tmp_path / "run")
  kept = first_bad // 2 * 2  # the last even step before the bad update
  assert str(e.value).startswith(
      f"training diverged at step {first_bad + 1}: the loss is not finite")
  assert f"the last good checkpoint (step {kept}) is kept" in str(e.value)
  mngr = checkpoints.manager(tmp_path / "run", read_only=True)
  assert mngr.latest_step() == kept
  assert bool(steps.all_finite(_params(tmp_path / "run", kept)))


@pytest.mark.slow
def test_skip_nonfinite_skips_and_counts(tmp_path, text_file, smoke_config,
                                         poisoned_loss):
  config = _config(smoke_config, text_file, num_steps=24, eval_every=24,
                   skip_nonfinite=True)
  expected = sum(poisoned_loss(config.seed, s) for s in range(24))
  assert expected > 0
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  assert result["step"] == 24 and np.isfinite(result["val_loss"])
  records = [json.loads(l) for l in
             (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  skipped = [r["skipped_steps"] for r in records if "skipped_steps" in r]
  assert skipped[-1] == expected
  assert skipped == [sum(poisoned_loss(config.seed, s) for s in range(r["step"]))
                     for r in records if "skipped_steps" in r]


@pytest.mark.slow
def test_huge_learning_rate_stops_the_command_cleanly(tmp_path, text_file,
                                                      smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=20, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  out = run_command("lm_jax.train", *train_flags(
      text_file, workdir, num_steps=20, eval_every=4, learning_rate=1e8))
  assert out.returncode == 2
  assert re.fullmatch(r"error: training diverged at step \d+: .* not finite .*"
                      r"the last good checkpoint \(step 4\) is kept; .*\n",
                      out.stderr), out.stderr
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [4]
