"""The LSTM language model: scan vs loop, backward pass, PyTorch, decoding."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import char_lstm
from lm_jax import config as config_lib
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.models import lstm, make_model

from conftest import (assert_reordered_close, init_with_random_biases,
                      run_command)

V, B, T = 11, 3, 9


@pytest.fixture
def model():
  return make_model(char_lstm.get_config("smoke").model, V)


@pytest.fixture
def params(model):
  return init_with_random_biases(model)


def _tokens(seed=1, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


def _loop_logits(model, params, tokens):
  """The model written as Python loops over `lstm_cell`, batch-major."""
  x = params["embed"]["embedding"][tokens]  # (B, T, D)
  for i in range(model.settings.num_layers):
    layer = params[f"lstm_{i}"]
    carry = (jnp.zeros((B, model.settings.hidden_size)),) * 2
    outputs = []
    for t in range(tokens.shape[1]):
      carry = lstm.lstm_cell(layer, x[:, t], carry)
      outputs.append(carry[1])
    x = jnp.stack(outputs, axis=1)  # (B, T, H)
  return x @ params["head"]["kernel"] + params["head"]["bias"]


@pytest.mark.slow
def test_scan_equals_python_loop_over_the_cell(model, params):
  tokens = _tokens()
  np.testing.assert_allclose(model.apply({"params": params}, tokens),
                             _loop_logits(model, params, tokens),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_hand_written_backward_equals_autodiff():
  """Gradients w.r.t. kernel, inputs and initial carry, with cotangents on
  every output (the hs and the final carry)."""
  H = 5
  k = iter(jax.random.split(jax.random.key(3), 8))
  kernel = jax.random.normal(next(k), (H, 4 * H)) * 0.5
  xw = jax.random.normal(next(k), (T, B, 4 * H))
  carry = (jax.random.normal(next(k), (B, H)), jax.random.normal(next(k), (B, H)))
  w_hs, w_c, w_h = (jax.random.normal(next(k), s)
                    for s in ((T, B, H), (B, H), (B, H)))

  def loss(scan, kernel, xw, carry):
    (c, h), hs = scan(kernel, xw, carry)[:2]
    return (hs * w_hs).sum() + (c * w_c).sum() + (h * w_h).sum()

  autodiff = lambda kernel, xw, carry: (lambda r: (r[0], r[1]))(
      lstm.forward_scan(kernel, xw, carry))
  ours = jax.grad(loss, argnums=(1, 2, 3))(lstm.lstm_scan, kernel, xw, carry)
  ref = jax.grad(loss, argnums=(1, 2, 3))(autodiff, kernel, xw, carry)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5), ours, ref)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ours))


@pytest.mark.slow
def test_layer_backward_equals_autodiff():
  """`lstm_layer_scan` (input projection inside, both kernels' gradients in
  one product): gradients w.r.t. every input, against JAX autodiff."""
  D, H = 3, 5
  k = iter(jax.random.split(jax.random.key(4), 9))
  args = (jax.random.normal(next(k), (D, 4 * H)) * 0.5,  # input kernel
          jax.random.normal(next(k), (H, 4 * H)) * 0.5,  # recurrent kernel
          jax.random.normal(next(k), (4 * H,)),  # bias
          jax.random.normal(next(k), (T, B, D)),  # x
          (jax.random.normal(next(k), (B, H)), jax.random.normal(next(k), (B, H))))
  w_hs, w_c, w_h = (jax.random.normal(next(k), s)
                    for s in ((T, B, H), (B, H), (B, H)))

  def loss(layer, *args):
    (c, h), hs = layer(*args)
    return (hs * w_hs).sum() + (c * w_c).sum() + (h * w_h).sum()

  def autodiff(w_in, w_rec, bias, x, carry):
    return lstm.forward_scan(w_rec, x @ w_in + bias, carry)[:2]

  argnums = tuple(range(1, 6))
  ours = jax.grad(loss, argnums)(lstm.lstm_layer_scan, *args)
  ref = jax.grad(loss, argnums)(autodiff, *args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5), ours, ref)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ours))


@pytest.mark.slow
def test_embedding_table_equals_embedding_lookup():
  """The first layer's projected-vocabulary table (V < T * B) gives the
  outputs and gradients of projecting the looked-up embeddings."""
  layer = lstm.LSTMLayer(8)
  k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
  embedding = jax.random.normal(k1, (V, 5))
  ids = jax.random.randint(k2, (T, B), 0, V)  # T * B = 27 > V = 11
  carry = (jnp.zeros((B, 8)), jnp.zeros((B, 8)))
  p = layer.init(k3, ids, carry, embedding)

  def loss(p, embedding, table):
    hs, (c, h) = (layer.apply(p, ids, carry, embedding) if table else
                  layer.apply(p, embedding[ids], carry))
    return jnp.sum(hs * jnp.arange(8.0)) + jnp.sum(c * h), hs

  (l1, hs1), g1 = jax.value_and_grad(loss, (0, 1), has_aux=True)(
      p, embedding, True)
  (l2, hs2), g2 = jax.value_and_grad(loss, (0, 1), has_aux=True)(
      p, embedding, False)
  # The table's products sum over the embedding width in another order,
  # carried through T steps of the recurrence; the gradients add up the
  # T x B positions in another order (a scatter-add into the table).
  assert_reordered_close(hs1, hs2, terms=T * embedding.shape[1])
  assert_reordered_close(g1, g2, terms=T * B)
  assert float(jnp.abs(g1[1]).sum()) > 0  # the embedding gets gradients


def test_equals_torch_lstm(model, params):
  torch = pytest.importorskip("torch")
  D, H = model.settings.embed_dim, model.settings.hidden_size
  as_torch = lambda a: torch.from_numpy(np.array(a))
  embed = torch.nn.Embedding(V, D)
  rnn = torch.nn.LSTM(D, H, num_layers=model.settings.num_layers,
                      batch_first=True)
  head = torch.nn.Linear(H, V)
  with torch.no_grad():
    embed.weight.copy_(as_torch(params["embed"]["embedding"]))
    for i in range(model.settings.num_layers):
      p = params[f"lstm_{i}"]
      # Our kernels are (in, 4H) with gates i, f, g, o side by side: torch's
      # order, stored (4H, in). Torch has two biases; they add up.
      getattr(rnn, f"weight_ih_l{i}").copy_(as_torch(p["input_kernel"]).T)
      getattr(rnn, f"weight_hh_l{i}").copy_(as_torch(p["recurrent_kernel"]).T)
      getattr(rnn, f"bias_ih_l{i}").copy_(as_torch(p["bias"]) * 0.25)
      getattr(rnn, f"bias_hh_l{i}").copy_(as_torch(p["bias"]) * 0.75)
    head.weight.copy_(as_torch(params["head"]["kernel"]).T)
    head.bias.copy_(as_torch(params["head"]["bias"]))
    tokens = _tokens(seed=2, shape=(B, 40))
    expected = head(rnn(embed(as_torch(tokens).long()))[0]).numpy()
  np.testing.assert_allclose(model.apply({"params": params}, tokens), expected,
                             rtol=1e-5, atol=1e-5)


def test_extend_equals_the_full_sequence(model, params):
  tokens = _tokens(seed=4)
  full = model.apply({"params": params}, tokens)
  state = model.initial_state(B)  # an unbound module: no params needed
  logits, state = model.apply({"params": params}, tokens[:, :4], state,
                              method=model.extend)
  pieces = [logits]
  for t in range(4, T):
    logits, state = model.apply({"params": params}, tokens[:, t:t + 1], state,
                                method=model.extend)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_stateful_greedy_equals_rerunning_the_sequence(model, params):
  prompt = _tokens(seed=6, shape=(2, 5))
  options = sampling.SamplingOptions(max_new_tokens=12, temperature=0)
  new = sampling.generate(params, model, prompt, jax.random.key(0), options)
  seq = prompt
  for _ in range(12):
    logits = model.apply({"params": params}, seq)
    seq = jnp.concatenate([seq, jnp.argmax(logits[:, -1:], -1)], axis=1)
  np.testing.assert_array_equal(new, seq[:, 5:])


def test_dropout_only_in_training(params):
  config = char_lstm.get_config("smoke")
  config.model.dropout = 0.5
  model = make_model(config.model, V)
  tokens = _tokens()
  a = model.apply({"params": params}, tokens)
  np.testing.assert_array_equal(a, model.apply({"params": params}, tokens))
  b = model.apply({"params": params}, tokens, train=True,
                  rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(a, b)


def test_validate_checks_lstm_fields():
  config = char_lstm.get_config("smoke")
  config.train.seq_len = 1000  # no positions: any length is fine
  config_lib.validate(config)
  config.model.hidden_size = 0
  with pytest.raises(UserError, match="config.model.hidden_size must be"):
    config_lib.validate(config)
  tf = config_lib.base_config()
  tf.model.kind = "lstm"
  with pytest.raises(UserError, match="does not take .*d_model"):
    config_lib.validate(tf)


@pytest.mark.slow
def test_command_line_train_and_sample(tmp_path, text_file):
  workdir = tmp_path / "cli"
  run = run_command
  out = run("lm_jax.train", "--config=configs/char_lstm.py:smoke",
            f"--config.data.path={text_file}", f"--workdir={workdir}",
            "--config.train.num_steps=8", "--config.train.eval_every=8")
  assert out.returncode == 0, out.stderr
  assert "model: lstm" in out.stdout and "eval step 8" in out.stdout
  out = run("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE",
            "--max_new_tokens=20", "--num_samples=2", "--seed=1")
  assert out.returncode == 0, out.stderr
  samples = out.stdout.split("---------- sample ")[1:]
  assert len(samples) == 2 and all("LINE" in s for s in samples)
