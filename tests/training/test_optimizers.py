"""Schedules, Muon, schedule-free AdamW, and wall time in the metrics."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, metrics, rundir
from lm_jax.training import optimizers, steps
from lm_jax.views import plotting

from conftest import train_on_8_devices


def test_wsd_and_constant_schedules_at_their_knots(smoke_config):
  t = smoke_config.train
  t.update(num_steps=100, warmup_steps=10, learning_rate=1e-3,
           min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2)
  lr = lambda step: float(optimizers.lr_schedule(t)(step))
  # Warmup 0 -> peak over 10 steps, flat to step 80, linear to 1e-4 at 100.
  assert [lr(0), lr(5), lr(10), lr(50), lr(80)] == pytest.approx(
      [0.0, 5e-4, 1e-3, 1e-3, 1e-3])
  assert lr(90) == pytest.approx(5.5e-4)
  assert lr(100) == pytest.approx(1e-4) and lr(200) == pytest.approx(1e-4)
  t.schedule = "constant"
  assert [lr(5), lr(10), lr(99)] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_unknown_optimizer_is_one_line_error(smoke_config):
  from lm_jax import config as config_lib
  smoke_config.train.optimizer = "lion"
  with pytest.raises(UserError, match="config.train.optimizer 'lion'.*muon"):
    config_lib.validate(smoke_config)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_muon_update_of_a_matrix_is_orthogonal(smoke_config, scan):
  smoke_config.model.scan_layers = scan
  t = smoke_config.train
  t.update(optimizer="muon", schedule="constant", warmup_steps=0,
           grad_clip=1e9, weight_decay=0.0)
  params = make_model(smoke_config.model, 20).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  grads = jax.tree.map(ill_conditioned, params)
  tx = optimizers.make_optimizer(t)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  hidden = optimizers.hidden_matrices(params)
  assert len(hidden) == 4 * (1 if scan else smoke_config.model.num_layers)
  assert not any("embed" in p or "head" in p for p in hidden)
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = jax.tree_util.keystr(path)
    g = grads_at(grads, path)
    if name not in hidden:  # AdamW's first step: lr * sign(g), about
      np.testing.assert_allclose(jnp.abs(u), t.learning_rate, rtol=0.05)
      continue
    for u2, g2 in zip(u.reshape(-1, *u.shape[-2:]),
                      g.reshape(-1, *g.shape[-2:])):
      s = np.linalg.svd(np.asarray(u2), compute_uv=False)
      raw = np.linalg.svd(np.asarray(g2), compute_uv=False)
      # Muon's 5 quintic Newton-Schulz steps bring every singular value
      # into about [0.7, 1.2] of one scale (not exactly 1, by design),
      # where the gradient's spread 1 to 10.
      assert s.max() / s.min() < 1.8 < 9.9 < raw.max() / raw.min(), name


def ill_conditioned(p: jax.Array) -> np.ndarray:
  """Random matrices (a batch over leading axes) whose singular values
  spread evenly from 1 to 10; random vectors."""
  g = np.random.default_rng(p.size).normal(size=p.shape).astype(np.float32)
  if p.ndim < 2:
    return g
  u, _, vt = np.linalg.svd(g, full_matrices=False)
  return (u * np.logspace(0, 1, u.shape[-1], dtype=np.float32)) @ vt


def grads_at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["muon", "schedule_free"])
def test_resume_is_exact_and_continues_the_clock(smoke_config, text_file,
                                                 tmp_path, optimizer):
  """(AdamW's exact resume: tests/test_train.py.) The loss falls, and a
  schedule-free run is evaluated and loaded at its average."""
  config = smoke_config
  config.data.path = str(text_file)
  config.train.update(optimizer=optimizer, num_steps=12, eval_every=6,
                      log_every=4, sample_tokens=0, learning_rate=3e-3)
  half = trainer.train_and_evaluate(config, tmp_path / "run", stop_at=6)
  first = metrics.read_records(tmp_path / "run/metrics.jsonl").records
  resumed = trainer.train_and_evaluate(config, tmp_path / "run")
  straight = trainer.train_and_evaluate(config, tmp_path / "straight")
  assert resumed["val_loss"] == straight["val_loss"]
  vocab = rundir.read_tokenizer(tmp_path / "run").vocab_size
  assert resumed["val_loss"] < half["val_loss"] < np.log(vocab)
  run = rundir.load_run(tmp_path / "run", 12)
  jax.tree.map(np.testing.assert_array_equal, run.params,
               rundir.load_run(tmp_path / "straight", 12).params)
  state = checkpoints.restore(
      checkpoints.manager(tmp_path / "run", read_only=True), 12,
      jax.eval_shape(lambda: steps.create_train_state(
          run.model, run.config.train, jax.random.key(0))))
  jax.tree.map(np.testing.assert_array_equal, run.params,
               optimizers.eval_params(state.params, state.opt_state))
  gap = max(float(jnp.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(run.params), jax.tree.leaves(state.params)))
  # Schedule-free evaluates elsewhere than it trains; Muon does not.
  assert (gap > 1e-4) == (optimizer == "schedule_free")
  records = metrics.read_records(tmp_path / "run/metrics.jsonl").records
  seconds = [r["elapsed_s"] for r in records]
  assert all(r.get("elapsed_s", 0) > 0 for r in records)
  # The resumed process starts its clock where the checkpoint left it.
  later = [r["elapsed_s"] for r in records[len(first):]]
  assert min(later) > max(r["elapsed_s"] for r in first)
  assert seconds == sorted(seconds)
  val = [r for r in records if "val_loss" in r]
  assert 0 < val[1]["eval_s"] < val[1]["elapsed_s"] and val[0]["eval_s"] == 0


def test_plot_against_wall_time(smoke_run, tmp_path):
  out = plotting.plot_runs([smoke_run], tmp_path / "loss.png", x="elapsed_s")
  assert out.stat().st_size > 1000
  curves = plotting.read_curves(smoke_run)
  assert sorted(curves.seconds) == [4]
  with pytest.raises(UserError, match="--x=step"):
    plotting.x_values(curves, "elapsed_s", (3,))


@pytest.mark.slow
def test_muon_with_accumulation_on_8_devices(smoke_config, text_file,
                                             tmp_path):
  overrides = {"data.path": str(text_file), "train.optimizer": "muon",
               "train.num_steps": 4, "train.eval_every": 4,
               "train.sample_tokens": 0, "train.grad_accum_steps": 2}
  many = train_on_8_devices(overrides, tmp_path / "eight")
  smoke_config.update_from_flattened_dict(
      {**overrides, "train.grad_accum_steps": 1})
  one = trainer.train_and_evaluate(smoke_config, tmp_path / "one")
  # Same batches; only the order of floating-point sums differs.
  assert many["val_loss"] == pytest.approx(one["val_loss"], abs=2e-4)


@pytest.mark.slow
def test_same_settings_reuse_the_compiled_step(smoke_config):
  """A second training in one process (a resume, a notebook) traces the
  jitted step once: the optimiser, a static field of the state, is the same
  object for the same settings, and a new one for new settings."""
  model = make_model(smoke_config.model, 20)
  new_state = lambda seed: steps.create_train_state(
      model, smoke_config.train, jax.random.key(seed))
  a, b = new_state(0), new_state(1)
  assert a.tx is b.tx
  x = jnp.zeros((2, smoke_config.train.seq_len), jnp.int32)
  key = jax.random.key(0)
  before = steps.train_step._cache_size()
  steps.train_step(a, x, x, key)
  steps.train_step(b, x, x, key)
  assert steps.train_step._cache_size() == before + 1
  smoke_config.train.learning_rate *= 2
  assert new_state(0).tx is not a.tx


def test_lr_schedule_and_decay_mask(smoke_config):
  t = smoke_config.train
  t.num_steps, t.warmup_steps, t.learning_rate = 100, 10, 1e-3
  lr = optimizers.lr_schedule(t)
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(100)) == pytest.approx(1e-3 * t.min_lr_ratio)


def test_budget_decay_follows_the_budget_or_the_steps(smoke_config):
  """schedule_clock=budget: the factor by the share of the budget spent
  (a + b * step), or of num_steps where that is further."""
  t = smoke_config.train
  t.update(num_steps=1000, min_lr_ratio=0.1, schedule="wsd",
           decay_fraction=0.5, schedule_clock="budget", max_seconds=10.0)
  at = lambda step, a, b=0.0: float(optimizers.budget_decay(t)(
      jnp.asarray(step, jnp.float32), jnp.asarray([a, b])))
  assert [at(0, 0.0), at(0, 0.5), at(0, 0.75), at(0, 1.0), at(0, 2.0)] == \
      pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
  assert at(100, 0.5, 0.0025) == pytest.approx(0.55)  # 0.5 + 100 * 0.0025
  assert at(900, 0.0) == pytest.approx(0.28)  # the steps are further: 0.9
  t.schedule = "cosine"
  assert [at(0, 0.0), at(0, 0.5), at(0, 1.0)] == pytest.approx(
      [1.0, 0.55, 0.1])
  # The optimiser keeps the warmup and the peak; the step decays.
  t.warmup_steps = 10
  assert float(optimizers.lr_schedule(t)(500)) == pytest.approx(
      t.learning_rate)
  t.schedule_clock = "steps"
  assert optimizers.budget_decay(t) is None


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_budget_clocked_update_is_the_update_at_the_scaled_rate(
    smoke_config, optimizer):
  """Scaling AdamW's and Muon's update (weight decay included) by the
  decay's factor is the same as training at the rate times the factor."""
  t = smoke_config.train
  t.update(optimizer=optimizer, schedule="wsd", warmup_steps=0,
           decay_fraction=0.5, min_lr_ratio=0.1, weight_decay=0.1,
           learning_rate=1e-2, muon_learning_rate=2e-2, max_seconds=10.0)
  model = make_model(smoke_config.model, 20)
  x = jax.random.randint(jax.random.key(1), (2, t.seq_len), 0, 20)
  key = jax.random.key(2)
  clocked = t.copy_and_resolve_references()
  clocked.schedule_clock = "budget"
  state = steps.create_train_state(model, clocked, jax.random.key(0))
  assert state.decay is not None
  budget_line = jnp.asarray([0.75, 0.0])  # 3/4 spent: the factor is 0.55
  after, metrics = steps.train_step(state, x, x, key, clock=budget_line)
  assert float(metrics["lr_factor"]) == pytest.approx(0.55)
  scaled = t.copy_and_resolve_references()
  scaled.update(schedule="constant", learning_rate=0.55e-2,
                muon_learning_rate=0.55 * 2e-2)
  plain = steps.create_train_state(model, scaled, jax.random.key(0))
  expected, _ = steps.train_step(plain, x, x, key)
  for a, b in zip(jax.tree.leaves(after.params),
                  jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_budget_clock_needs_a_budget_and_no_schedule_free(smoke_config):
  from lm_jax import config as config_lib
  smoke_config.train.schedule_clock = "budget"
  with pytest.raises(UserError, match="set config.train.max_seconds"):
    config_lib.validate(smoke_config)
  smoke_config.train.update(max_seconds=5.0, optimizer="schedule_free")
  with pytest.raises(UserError, match="schedule_clock=steps"):
    config_lib.validate(smoke_config)
  smoke_config.train.schedule_clock = "hours"
  with pytest.raises(UserError, match="schedule_clock 'hours'"):
    config_lib.validate(smoke_config)
