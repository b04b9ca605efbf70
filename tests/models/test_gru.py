"""The GRU language model: PyTorch parity, decoding, truncated BPTT, gates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import char_gru
from lm_jax import config as config_lib
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.loop import trainer
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import steps
from lm_jax.views import internals

from conftest import init_with_random_biases

V, B, T = 11, 3, 9


@pytest.fixture
def model():
  return make_model(char_gru.get_config("smoke").model, V)


@pytest.fixture
def params(model):
  return init_with_random_biases(model)


def _tokens(seed=1, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(B, T), (40, 9)])  # (40, 9): no table
def test_equals_torch_gru(model, params, shape):
  torch = pytest.importorskip("torch")
  tokens = np.asarray(_tokens(2, shape))
  as_torch = lambda a: torch.from_numpy(np.array(a))
  embed = torch.nn.Embedding(V, model.settings.embed_dim)
  rnn = torch.nn.GRU(model.settings.embed_dim, model.settings.hidden_size,
                     num_layers=model.settings.num_layers, batch_first=True)
  head = torch.nn.Linear(model.settings.hidden_size, V)
  with torch.no_grad():
    embed.weight.copy_(as_torch(params["embed"]["embedding"]))
    for i in range(model.settings.num_layers):
      p = params[f"gru_{i}"]  # gates r, z, n side by side, as torch's rows
      getattr(rnn, f"weight_ih_l{i}").copy_(as_torch(p["input_kernel"]).T)
      getattr(rnn, f"weight_hh_l{i}").copy_(as_torch(p["recurrent_kernel"]).T)
      getattr(rnn, f"bias_ih_l{i}").copy_(as_torch(p["input_bias"]))
      getattr(rnn, f"bias_hh_l{i}").copy_(as_torch(p["recurrent_bias"]))
    head.weight.copy_(as_torch(params["head"]["kernel"]).T)
    head.bias.copy_(as_torch(params["head"]["bias"]))
    expected = head(rnn(embed(as_torch(tokens).long()))[0]).numpy()
  np.testing.assert_allclose(model.apply({"params": params}, tokens),
                             expected, rtol=1e-5, atol=1e-5)


def test_extend_equals_the_full_sequence(model, params):
  tokens = _tokens(seed=4)
  full = model.apply({"params": params}, tokens)
  logits, state = model.apply({"params": params}, tokens[:, :4],
                              model.initial_state(B), method=model.extend)
  pieces = [logits]
  for t in range(4, T):
    logits, state = model.apply({"params": params}, tokens[:, t:t + 1], state,
                                method=model.extend)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_stateful_greedy_equals_rerunning_the_sequence(model, params):
  assert model.context_length is None  # the state carries, no window
  prompt = _tokens(seed=6, shape=(2, 5))
  options = sampling.SamplingOptions(max_new_tokens=12, temperature=0)
  new = sampling.generate(params, model, prompt, jax.random.key(0), options)
  seq = prompt
  for _ in range(12):
    logits = model.apply({"params": params}, seq)
    seq = jnp.concatenate([seq, jnp.argmax(logits[:, -1:], -1)], axis=1)
  np.testing.assert_array_equal(new, seq[:, 5:])


def test_internals_replay_the_model(model, params):
  tokens = np.array([1, 5, 2, 10, 7, 7, 3])
  inside = internals.model_internals(model, params, tokens)
  L, H = model.settings.num_layers, model.settings.hidden_size
  assert inside.panels == ("reset gate", "update gate", "hidden state")
  assert inside.values.shape == (L, 3, len(tokens), H)
  gates = inside.values[:, :2]
  assert gates.min() >= 0 and gates.max() <= 1 and gates.std() > 0.01
  _, state = model.apply({"params": params}, jnp.asarray(tokens)[None],
                         model.initial_state(1), method=model.extend)
  for layer, h in enumerate(state):  # the replay ends in the model's state
    np.testing.assert_allclose(inside.values[layer, 2, -1], h[0], atol=1e-5)


def test_validate_checks_gru_fields():
  config = char_gru.get_config("smoke")
  config.train.carry_state = True  # a recurrent model may carry its state
  config_lib.validate(config)
  config.model.hidden_size = -1
  with pytest.raises(UserError, match="config.model.hidden_size must be a "
                     "positive integer, got -1"):
    config_lib.validate(config)


@pytest.mark.slow
def test_tbptt_trains_through_the_shared_carry(text_file, tmp_path):
  """Truncated BPTT needs nothing GRU-specific: the carry is the model's
  decoding state; a run stopped and resumed equals one straight run."""
  config = char_gru.get_config("smoke")
  config.data.path = str(text_file)
  config.train.update(dict(carry_state=True, num_steps=8, eval_every=4,
                           sample_tokens=0))
  first = trainer.train_and_evaluate(config, tmp_path / "run", stop_at=4)
  resumed = trainer.train_and_evaluate(config, tmp_path / "run")
  straight = trainer.train_and_evaluate(config, tmp_path / "straight")
  assert resumed["val_loss"] == straight["val_loss"] < first["val_loss"]
  run = rundir.load_run(tmp_path / "run", 8)
  abstract = jax.eval_shape(lambda: steps.create_train_state(
      run.model, config.train, jax.random.key(0)))
  state = checkpoints.restore(
      checkpoints.manager(tmp_path / "run", read_only=True), 8, abstract)
  assert len(state.carry) == config.model.num_layers
  assert float(jnp.abs(state.carry[-1]).max()) > 0  # carried, not zero
