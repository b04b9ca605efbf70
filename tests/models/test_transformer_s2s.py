"""The encoder-decoder Transformer (lm_jax/models/transformer_s2s.py): cached
decoding equals teacher forcing, a batch-leading state, padding and
causality, with learned positions and with rotary ones and the causal
model's recipe (configs/echo_s2s.py:fast's). (Trained through the same
trainer: tests/models/test_seq2seq.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import echo_s2s
from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from lm_jax.errors import UserError
from lm_jax.models import check_config, make_model


V, S, T = 13, 6, 5


RECIPES = {"learned": {}, "rope": echo_s2s.RECIPE}  # smoke's; fast's


def make(recipe: dict, **changes):
  """The smoke model at V, S, T, 2 layers, with `recipe`'s settings."""
  config = echo_s2s.get_config("smoke").model
  config.update(max_source_len=S, max_target_len=T, num_layers=2,
                **recipe, **changes)
  return make_model(config, V)


@pytest.fixture(scope="module", params=list(RECIPES))
def model_and_params(request):
  model = make(RECIPES[request.param])
  src = jnp.array([[4, 5, 6, PAD_ID, PAD_ID, PAD_ID], [7, 8, 9, 10, 4, 5]])
  tgt = jnp.array([[BOS_ID, 6, 5, 4, EOS_ID, PAD_ID],
                   [BOS_ID, 5, 4, 10, 9, 8]])
  params = jax.jit(model.init)(jax.random.key(0), src, tgt[:, :-1])["params"]
  return model, params, src, tgt[:, :-1]


@pytest.mark.slow
def test_cached_decoding_equals_teacher_forcing(model_and_params):
  """BOS, y_1 .. y_k fed one at a time through extend: __call__'s logits."""
  model, params, src, tgt_in = model_and_params
  full = model.apply({"params": params}, src, tgt_in)  # (B, T, V)
  state = model.initial_state(
      model.apply({"params": params}, src, method=model.encode))
  steps = []
  for t in range(tgt_in.shape[1]):
    logits, state = model.apply({"params": params}, tgt_in[:, t:t + 1],
                                state, method=model.extend)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
  assert int(state["length"]) == tgt_in.shape[1]


def test_state_is_batch_leading(model_and_params):
  """Rows of the state can be tiled and reordered (a beam search)."""
  model, params, src, tgt_in = model_and_params
  state = model.initial_state(
      model.apply({"params": params}, src, method=model.encode))
  for leaf in jax.tree.leaves(state):
    assert leaf.ndim == 0 or leaf.shape[0] == 2
  swapped = jax.tree.map(
      lambda a: a if a.ndim == 0 else jnp.take(a, jnp.array([1, 0]), axis=0),
      state)
  first = model.apply({"params": params}, tgt_in[::-1, :1], swapped,
                      method=model.extend)[0]
  second = model.apply({"params": params}, tgt_in[:, :1], state,
                       method=model.extend)[0]
  np.testing.assert_allclose(first, second[::-1], atol=1e-6)


def test_padding_and_causality(model_and_params):
  model, params, src, tgt_in = model_and_params
  weights = model.apply({"params": params}, src, tgt_in,
                        method=model.cross_attention)  # (B, L, H, T, S)
  assert weights.shape == (2, 2, 2, T, S)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert float(jnp.abs(weights[0, ..., 3:]).max()) == 0.0  # PAD source
  # A later decoder input changes no earlier position's logits.
  changed = tgt_in.at[:, 3].set(11)
  a = model.apply({"params": params}, src, tgt_in)
  b = model.apply({"params": params}, src, changed)
  np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
  assert not np.allclose(a[:, 3:], b[:, 3:])


def test_greedy_decoding_through_the_cache_equals_the_parallel_pass(
    model_and_params):
  """Each greedy token, chosen step by step from the cache, is the argmax
  of the teacher-forced pass over the reply so far."""
  model, params, src, _ = model_and_params
  # Larger weights, so that the greedy replies vary.
  params = jax.tree.map(lambda p: p * 8, params)
  state = model.initial_state(
      model.apply({"params": params}, src, method=model.encode))
  token, reply, steps = jnp.full((2, 1), BOS_ID), [], []
  for _ in range(T):
    logits, state = model.apply({"params": params}, token, state,
                                method=model.extend)
    steps.append(logits)
    token = jnp.argmax(logits[:, -1], axis=-1)[:, None]
    reply.append(token)
  tgt_in = jnp.concatenate([jnp.full((2, 1), BOS_ID), *reply[:-1]], axis=1)
  full = model.apply({"params": params}, src, tgt_in)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)
  np.testing.assert_array_equal(jnp.argmax(full, -1),
                                jnp.concatenate(reply, axis=1))


def test_rope_has_no_position_tables_and_counts_prompts_from_both_ends():
  model = make(echo_s2s.RECIPE, num_heads=4, d_model=32)
  src = jnp.array([[4, 5, 6, PAD_ID, PAD_ID, PAD_ID]])
  params = model.init(jax.random.key(0), src, src[:, :2])["params"]
  assert "src_pos" not in params and "tgt_pos" not in params
  assert model.lookup_params(params) == 0
  positions = model.bind({"params": params}).cross_key_positions(
      src != PAD_ID)  # (B, H, S): two heads forward, two backward
  np.testing.assert_array_equal(positions[0, :2], [range(S)] * 2)
  np.testing.assert_array_equal(positions[0, 2:, :3], [[2, 1, 0]] * 2)
  learned = make({})
  assert learned.lookup_params(learned.init(
      jax.random.key(0), src, src[:, :2])["params"]) == (S + T + 1) * 32


@pytest.mark.parametrize("change, message", [
    (dict(cross_position="end"), "cross_position must be one of"),
    (dict(position="rope", num_heads=2, d_model=6), "head size"),
    (dict(cross_position="start", num_heads=2, d_model=6), "head size"),
    (dict(norm="batchnorm"), "config.model.norm must be one of")])
def test_bad_recipe_settings_are_refused(change, message):
  config = echo_s2s.get_config("smoke")
  config.model.update(change)
  with pytest.raises(UserError, match=message):
    check_config(config.model, config.train)
