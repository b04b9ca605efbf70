"""Truncated BPTT for the LSTM (config.train.carry_state): lanes, carried
state, truncated gradients, resume, devices and the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import char_lstm, char_tf
from lm_jax import config as config_lib
from lm_jax.data import windows
from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import losses, steps

from conftest import (assert_reordered_close, assert_scaled_close,
                      init_with_random_biases, run_command, train_on_8_devices)

V, B, T = 11, 3, 9


@pytest.fixture
def model():
  return make_model(char_lstm.get_config("smoke").model, V)


@pytest.fixture
def params(model):
  return init_with_random_biases(model)


def _tokens(seed, shape):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


# Lanes --------------------------------------------------------------------


def test_lane_batch_hand_checked_with_wrap_around():
  # 23 tokens whose values are their indices; 2 lanes of (23 - 1) // 2 = 11
  # tokens (lane 0 starts at 0, lane 1 at 11), 11 // 3 = 3 windows of 3.
  tokens = jnp.arange(23)
  assert windows.lane_windows(23, 2, 3) == 3
  expected = {
      0: ([[0, 1, 2], [11, 12, 13]], [[1, 2, 3], [12, 13, 14]], True),
      1: ([[3, 4, 5], [14, 15, 16]], [[4, 5, 6], [15, 16, 17]], False),
      2: ([[6, 7, 8], [17, 18, 19]], [[7, 8, 9], [18, 19, 20]], False),
      3: ([[0, 1, 2], [11, 12, 13]], [[1, 2, 3], [12, 13, 14]], True),
      5: ([[6, 7, 8], [17, 18, 19]], [[7, 8, 9], [18, 19, 20]], False),
  }
  jitted = jax.jit(windows.lane_batch, static_argnums=(2, 3))
  for step, (x, y, reset) in expected.items():
    for fn in (windows.lane_batch, jitted):  # a Python int and a traced step
      got = fn(tokens, jnp.int32(step) if fn is jitted else step, 2, 3)
      np.testing.assert_array_equal(got[0], x)
      np.testing.assert_array_equal(got[1], y)
      assert bool(got[2]) is reset
  # Lane 1 reads tokens 11..19 and predicts 12..20; token 21 (after lane 1)
  # is never read: lanes hold 11 tokens, 9 of them inputs.


# Carried state ------------------------------------------------------------


@pytest.mark.slow
def test_carried_state_equals_one_long_sequence(model, params):
  tokens = _tokens(1, (B, 2 * T + 1))
  x, y = tokens[:, :-1], tokens[:, 1:]
  full = model.apply({"params": params}, x)  # (B, 2T, V), one pass
  state = model.initial_state(B)
  first, state = model.apply({"params": params}, x[:, :T], state,
                             method=model.extend)
  second, _ = model.apply({"params": params}, x[:, T:], state,
                          method=model.extend)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), full,
                             rtol=1e-5, atol=1e-5)
  # The training loss of the second window, continuing from the state.
  key = jax.random.key(0)
  loss, _ = steps.loss_fn(params, model, x[:, T:], y[:, T:], key, state)
  assert float(loss) == pytest.approx(
      float(losses.cross_entropy(full[:, T:], y[:, T:])), abs=1e-5)
  zero, _ = steps.loss_fn(params, model, x[:, T:], y[:, T:], key,
                          model.initial_state(B))
  assert abs(float(zero) - float(loss)) > 1e-3  # the state matters


@pytest.mark.slow
def test_gradient_stops_at_the_window_boundary(model, params):
  """d loss_2 / d params: the state from window 1 counts as a constant,
  although it is computed from the same parameters here."""
  tokens = _tokens(2, (B, 2 * T + 1))
  x1, x2, y2 = tokens[:, :T], tokens[:, T:-1], tokens[:, T + 1:]
  key = jax.random.key(0)
  zero = model.initial_state(B)
  window1_state = lambda p: model.apply({"params": p}, x1, zero,
                                        method=model.extend)[1]

  def through_window1(p):  # the state is a function of p
    return steps.loss_fn(p, model, x2, y2, key, window1_state(p))[0]

  constant_state = window1_state(params)
  truncated = jax.jit(jax.grad(through_window1))(params)
  reference = jax.jit(jax.grad(lambda p: steps.loss_fn(
      p, model, x2, y2, key, constant_state)[0]))(params)
  # Two programs for one gradient, a mean over B x T tokens.
  assert_reordered_close(truncated, reference, terms=B * T)

  # Full BPTT over both windows gives other gradients, so the check above
  # would fail if the gradient flowed back into window 1.
  full = jax.jit(jax.grad(lambda p: losses.cross_entropy(
      model.apply({"params": p}, tokens[:, :-1])[:, T:], y2)))(params)
  differ = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                        truncated, full)
  assert differ["lstm_0"]["recurrent_kernel"] > 1e-4
  assert differ["head"]["kernel"] < 1e-5  # the head sees window 2 only


def _carry_config(**train):
  config = char_lstm.get_config("smoke")
  config.train.update({**dict(batch_size=2, seq_len=3, carry_state=True,
                              warmup_steps=0, learning_rate=1e-2), **train})
  return config


@pytest.mark.slow
def test_train_steps_equal_a_hand_written_tbptt_loop(model):
  """Five steps in two jitted calls (2 + 3) against a Python loop: lanes of
  11 tokens, 3 windows each, so step 3 wraps around and resets the state."""
  config = _carry_config()
  tokens = _tokens(3, (23,))
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  assert state.carry is not None

  @jax.jit
  def reference_step(params, opt_state, carry, x, y):
    def loss(p):  # `carry` is a constant here: the gradient stops at it
      logits, new = model.apply({"params": p}, x, carry, method=model.extend)
      return losses.cross_entropy(logits, y), new

    (value, carry), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = state.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, carry, value

  params, opt_state, carry = state.params, state.opt_state, state.carry
  expected_losses = []
  for k in range(5):
    j = k % 3
    if j == 0:
      carry = model.initial_state(2)
    idx = np.array([[b * 11 + j * 3 + i for i in range(4)] for b in range(2)])
    params, opt_state, carry, value = reference_step(
        params, opt_state, carry, tokens[idx[:, :-1]], tokens[idx[:, 1:]])
    expected_losses.append(float(value))

  seed_key = jax.random.key(1)
  run = lambda state, n: steps.train_steps(
      state, tokens, seed_key, batch_size=2, seq_len=3, num_steps=n)
  state, m1 = run(state, 2)
  after_two = jax.tree.map(np.array, state.carry)
  state, m2 = run(state, 3)
  assert int(state.step) == 5
  # The same math jitted as two programs, fused and summed differently,
  # five Adam steps on: equal to a small fraction of each quantity's scale.
  np.testing.assert_allclose(np.concatenate([m1["loss"], m2["loss"]]),
                             expected_losses, rtol=1e-5)
  assert_scaled_close(state.params, params, rel=1e-5)
  assert_scaled_close(state.carry, carry, rel=1e-5)
  assert not np.allclose(after_two[0][1], state.carry[0][1])


@pytest.mark.slow
def test_grad_accumulation_splits_the_lanes(model):
  config = _carry_config(batch_size=4)
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  state = state.replace(carry=jax.tree.map(
      lambda a: jax.random.normal(jax.random.key(a.size), a.shape) * 0.5,
      state.carry))
  x, y = _tokens(4, (4, 5)), _tokens(5, (4, 5))
  key = jax.random.key(3)
  one, m1 = steps.train_step(state, x, y, key)
  two, m2 = steps.train_step(state, x, y, key, grad_accum_steps=2)
  # Each row's carry comes from its own recurrence; only the products' inner
  # sums (over the hidden units) may be split differently at 2 rows than 4.
  hidden = config.model.hidden_size
  assert_reordered_close(two.carry, one.carry, terms=hidden)
  # The loss and the gradients are means over the B x T tokens, summed in
  # another order by two micro-batches. Compared before Adam: its first
  # step, lr * g / (|g| + eps), turns rounding in a gradient near zero into
  # a much larger difference in the parameters (seen on AMD EPYC: 2.5e-6).
  tokens = x.size
  assert_reordered_close(m2["loss"], m1["loss"], terms=tokens)
  g1, g2 = (steps.accumulated_grads(state.params, model, x, y, key, n,
                                    state.carry)[1] for n in (1, 2))
  assert_reordered_close(g2, g1, terms=tokens)


# Config -------------------------------------------------------------------


def test_config_switch_and_variant():
  assert config_lib.base_config().train.carry_state is False
  assert char_lstm.get_config().train.carry_state is False
  tbptt = char_lstm.get_config("tbptt")
  assert tbptt.train.carry_state is True
  assert tbptt.model == char_lstm.get_config().model
  config_lib.validate(tbptt)
  tf = char_tf.get_config("smoke")
  tf.train.carry_state = True
  with pytest.raises(UserError, match=r"carry_state=True needs a recurrent model .*"
                     "the transformer model carries no state"):
    config_lib.validate(tf)


# Training runs ------------------------------------------------------------


def _restored_state(workdir, step):
  """The whole TrainState a run saved at `step`, carry included."""
  run = rundir.load_run(workdir, step)
  config, model = run.config, run.model
  abstract = jax.eval_shape(lambda: steps.create_train_state(
      model, config.train, jax.random.key(0)))
  mngr = checkpoints.manager(workdir, read_only=True)
  return checkpoints.restore(mngr, step, abstract)


def _smoke(text_file, **train):
  config = char_lstm.get_config("smoke")
  config.data.path = str(text_file)
  config.train.update(dict(carry_state=True, num_steps=8, eval_every=4,
                           sample_tokens=0, **train))
  return config


@pytest.mark.slow
def test_resume_restores_the_carried_state_exactly(text_file, tmp_path):
  config = _smoke(text_file)
  trainer.train_and_evaluate(config, tmp_path / "run", stop_at=4)
  at_4 = _restored_state(tmp_path / "run", 4)
  assert at_4.carry is not None
  assert float(jnp.abs(at_4.carry[-1][1]).max()) > 0  # not the zero state
  resumed = trainer.train_and_evaluate(config, tmp_path / "run")
  straight = trainer.train_and_evaluate(config, tmp_path / "straight")
  assert resumed["val_loss"] == straight["val_loss"]
  a = _restored_state(tmp_path / "run", 8)
  b = _restored_state(tmp_path / "straight", 8)
  jax.tree.map(np.testing.assert_array_equal, (a.params, a.carry),
               (b.params, b.carry))
  assert not np.allclose(at_4.carry[-1][1], a.carry[-1][1])
  # Switching the mode on resume is refused: the checkpoints differ.
  config.train.carry_state = False
  with pytest.raises(UserError,
                     match="train.carry_state: stored True, requested False"):
    trainer.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.slow
def test_command_line_smoke_run_and_refusal(text_file, tmp_path):
  workdir = tmp_path / "cli"
  out = run_command("lm_jax.train", "--config=configs/char_lstm.py:smoke",
                   "--config.train.carry_state=True",
                   f"--config.data.path={text_file}", f"--workdir={workdir}",
                   "--config.train.num_steps=8", "--config.train.eval_every=8",
                   "--config.train.sample_tokens=0")
  assert out.returncode == 0, out.stderr
  assert "carrying the recurrent state (truncated BPTT): 8 lanes" in out.stdout
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "loss" in r]
  assert len(losses) == 2 and np.isfinite(losses).all()
  assert json.loads((workdir / "config.json").read_text())["train"][
      "carry_state"] is True
  state = _restored_state(workdir, 8)
  assert int(state.step) == 8 and bool(steps.all_finite(state.carry))

  refused = run_command("lm_jax.train", "--config=configs/char_tf.py:smoke",
                       "--config.train.carry_state=True",
                       f"--config.data.path={text_file}",
                       f"--workdir={tmp_path / 'tf'}")
  assert refused.returncode == 2
  assert refused.stderr.startswith(
      "error: config.train.carry_state=True needs a recurrent model")
  assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
  assert not (tmp_path / "tf").exists()


@pytest.mark.slow  # trains in a process of 8 simulated devices
def test_eight_devices_match_one(text_file, tmp_path):
  """The lanes and their state split across 8 devices, parameters sharded
  (FSDP): the same run as on one device, to float rounding."""
  overrides = {"data.path": str(text_file), "train.carry_state": True,
               "train.num_steps": 8, "train.eval_every": 8,
               "train.sample_tokens": 0, "train.fsdp": True}
  many = train_on_8_devices(overrides, tmp_path / "eight", config="char_lstm")
  config = char_lstm.get_config("smoke")
  config.update_from_flattened_dict(overrides)
  one = trainer.train_and_evaluate(config, tmp_path / "one")
  assert many["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
  a = _restored_state(tmp_path / "eight", 8)
  b = _restored_state(tmp_path / "one", 8)
  # 8 steps of sums split over 8 devices: see assert_scaled_close.
  assert_scaled_close((a.params, a.carry), (b.params, b.carry), rel=1e-4)
