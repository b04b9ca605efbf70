"""The LSTM encoder-decoder: the equations by hand, cached decoding,
padding, gradients, attention weights, config checks."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lm_jax import models
from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from lm_jax.errors import UserError
from lm_jax.models import lstm
from lm_jax.models.lstm_s2s import LSTMSeq2Seq

V = 10
SRC = jnp.array([[4, 5, 6, 7, PAD_ID, PAD_ID],
                 [8, 9, 4, 5, 6, 7],
                 [9, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]])  # (B, S)
TGT = jnp.array([[BOS_ID, 7, 6, 5, 4, EOS_ID, PAD_ID],
                 [BOS_ID, 4, 4, 8, 8, 9, 9],
                 [BOS_ID, 9, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]])
# Two layers with attention and input feeding; one layer for the others.
VARIANTS = [dict(num_layers=2), dict(input_feeding=False),
            dict(attention=False)]


def _model(**fields) -> LSTMSeq2Seq:
  return LSTMSeq2Seq.from_config({
      **dict(max_source_len=6, max_target_len=6, num_layers=1, embed_dim=8,
             hidden_size=12, dropout=0.0, attention=True, input_feeding=True),
      **fields}, V)


def _params(model: LSTMSeq2Seq, seed: int = 0):
  """Random parameters, biases included, so that a misplaced one shows
  (drawn from the shapes: compiling `init` costs seconds)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), SRC, TGT)["params"]
  keys = iter(jax.random.split(jax.random.key(seed),
                               len(jax.tree.leaves(shapes))))
  return jax.tree.map(
      lambda p: jax.random.normal(next(keys), p.shape) * 0.4, shapes)


@functools.partial(jax.jit, static_argnames=("model", "method", "train"))
def _apply(model, params, *args, method="__call__", train=False):
  """`model.apply`, jitted: eager Linen calls retrace every scan."""
  return model.apply({"params": params}, *args, method=method, train=train,
                     rngs={"dropout": jax.random.key(2)})


def _reference_logits(model, params, src, tgt):
  """One row, written as loops over `lstm_cell` from the module docstring's
  equations: src (S,) with no padding, tgt (T,) -> logits (T, V)."""
  p, H = params, model.settings.hidden_size
  zero = (jnp.zeros((1, H)), jnp.zeros((1, H)))
  x = p["embed"]["embedding"][src][:, None]  # (S, 1, D)
  init = []
  for i in range(model.settings.num_layers):
    runs = []
    for name, order in (("forward", range(len(src))),
                        ("backward", reversed(range(len(src))))):
      carry, hs = zero, {}
      for s in order:
        carry = lstm.lstm_cell(p[f"{name}_layers_{i}"], x[s], carry)
        hs[s] = carry[1]
      runs.append((carry, jnp.stack([hs[s] for s in range(len(src))])))
    (cf, hf), fwd = runs[0]
    (cb, hb), bwd = runs[1]
    x = jnp.concatenate([fwd, bwd], axis=-1)  # (S, 1, 2H)
    dense = lambda name, v: v @ p[name]["kernel"] + p[name]["bias"]
    init.append((dense(f"bridge_c_{i}", jnp.concatenate([cf, cb], -1)),
                 jnp.tanh(dense(f"bridge_h_{i}", jnp.concatenate([hf, hb],
                                                                 -1)))))
  memory = x[:, 0]  # (S, 2H)
  layers, feed, logits = init, jnp.zeros((1, model.feed_size)), []
  for token in tgt:
    inputs = jnp.concatenate([p["embed"]["embedding"][token][None], feed], -1)
    for i in range(model.settings.num_layers):
      layers[i] = lstm.lstm_cell(p[f"decoder_layers_{i}"], inputs, layers[i])
      inputs = layers[i][1]
    out = inputs  # (1, H)
    if model.settings.attention:
      a = jax.nn.softmax(memory @ p["score"]["kernel"] @ out[0])  # (S,)
      out = jnp.tanh(jnp.concatenate([a @ memory, out[0]]) @ p["combine"])
      out = out[None]
      feed = out[:, :model.feed_size]
    logits.append(out[0] @ p["head"]["kernel"] + p["head"]["bias"])
  return jnp.stack(logits)


@pytest.mark.slow
@pytest.mark.parametrize("fields", VARIANTS)
def test_equals_the_equations_written_as_loops(fields):
  model = _model(**fields)
  params = _params(model)
  np.testing.assert_allclose(
      _apply(model, params, SRC, TGT)[1],
      _reference_logits(model, params, SRC[1], TGT[1]),
      rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fields", VARIANTS)
def test_cached_decoding_equals_teacher_forcing(fields):
  """BOS, y_1, ... fed one at a time (and then two, then the rest) give
  the teacher-forced logits."""
  model = _model(**fields)
  params = _params(model)
  full = _apply(model, params, SRC, TGT)
  state = model.initial_state(_apply(model, params, SRC, method="encode"))
  steps = []
  for t in range(TGT.shape[1]):
    logits, state = _apply(model, params, TGT[:, t:t + 1], state,
                           method="extend")
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full,
                             rtol=1e-5, atol=1e-5)
  state = model.initial_state(_apply(model, params, SRC, method="encode"))
  first, state = _apply(model, params, TGT[:, :2], state, method="extend")
  rest, _ = _apply(model, params, TGT[:, 2:], state, method="extend")
  np.testing.assert_allclose(jnp.concatenate([first, rest], 1), full,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_padding_changes_nothing():
  """More PAD columns after the source: the same logits, and padding gets
  no attention."""
  model = _model(num_layers=2)
  params = _params(model)
  padded = jnp.pad(SRC, ((0, 0), (0, 3)), constant_values=PAD_ID)
  np.testing.assert_allclose(_apply(model, params, padded, TGT),
                             _apply(model, params, SRC, TGT),
                             rtol=1e-5, atol=1e-5)
  weights = model.apply({"params": params}, padded, TGT,
                        method="cross_attention")
  assert weights.shape == (3, 1, 1, TGT.shape[1], 9)
  np.testing.assert_allclose(weights.sum(-1), 1, rtol=1e-5)
  assert float(jnp.abs(weights[0, ..., 4:]).max()) == 0
  assert float(jnp.abs(weights[2, ..., 1:]).max()) == 0


def test_no_attention_has_no_cross_attention():
  model = _model(attention=False)
  params = _params(model)
  with pytest.raises(NotImplementedError, match="no attention to draw"):
    model.apply({"params": params}, SRC, TGT, method="cross_attention")


@pytest.mark.slow
@pytest.mark.parametrize("fields", [dict(), dict(attention=False)])
def test_gradients_are_finite_and_reach_every_parameter(fields):
  model = _model(dropout=0.1, **fields)
  params = _params(model)

  def loss(params):
    logits = _apply(model, params, SRC, TGT[:, :-1], train=True)
    target = TGT[:, 1:]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None],
                               -1)[..., 0]
    weight = target != PAD_ID
    return (nll * weight).sum() / weight.sum()

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree.leaves_with_path(grads):
    assert bool(jnp.isfinite(g).all()), path
    assert float(jnp.abs(g).max()) > 0, path


def _check(**changes):
  from configs import echo_lstm
  model = ml_collections.ConfigDict(
      {**echo_lstm.get_config("smoke").model.to_dict(), **changes})
  models.check_config(model, ml_collections.ConfigDict())


def test_config_checks():
  _check()
  with pytest.raises(UserError, match="config.model.attention must be True "
                     "or False, got 'no'"):
    _check(attention="no")
  with pytest.raises(UserError, match="config.model.hidden_size must be a "
                     "positive integer"):
    _check(hidden_size=0)
  with pytest.raises(UserError, match="max_source_len"):
    _check(max_source_len=-1)
