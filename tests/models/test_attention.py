"""Blocked attention equals dense attention: outputs, gradients, decoding,
and with dropout on the weights (the same mask), training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.config import validate
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.models import make_model, transformer
from lm_jax.models.attention import (attention_over_cache,
                                     attention_with_past,
                                     blocked_causal_attention, dropout_mask)
from lm_jax.generation.sampling import SamplingOptions

V = 11
TOL = dict(rtol=1e-5, atol=1e-5)


def dense(q, k, v, mask=None, keep=1.0):  # (B, H, T, K) each
  """Textbook attention; with `mask` (B, H, T, T), inverted dropout."""
  T = q.shape[2]
  s = jnp.einsum("bhqk,bhtk->bhqt", q, k) / math.sqrt(q.shape[3])
  s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
  p = jax.nn.softmax(s, -1)
  if mask is not None:
    p = p * mask / keep
  return jnp.einsum("bhqt,bhtk->bhqk", p, v)


def _qkvw(T, B=2, H=3, K=8):
  return [jax.random.normal(jax.random.key(i), (B, H, T, K)) for i in range(4)]


@pytest.mark.slow
@pytest.mark.parametrize("T", [64, 50, 5])  # multiple of the tile or not
def test_blocked_equals_dense(T):
  q, k, v, w = _qkvw(T)
  blocked = lambda q, k, v: blocked_causal_attention(q, k, v, tile=16)
  np.testing.assert_allclose(jax.jit(blocked)(q, k, v), dense(q, k, v), **TOL)
  grads = [jax.jit(jax.grad(lambda *a: (f(*a) * w).sum(), (0, 1, 2)))(q, k, v)
           for f in (blocked, dense)]
  for got, want in zip(*grads):  # d/dq, d/dk, d/dv
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("T", [64, 50])  # multiple of the tile or not
def test_blocked_dropout_equals_dense_with_the_same_mask(T):
  q, k, v, w = _qkvw(T)
  rate, key = 0.2, jax.random.key(3)
  mask = dropout_mask(key, 2, 3, T, tile=16, dropout_rate=rate)
  assert mask.shape == (2, 3, T, T) and mask.dtype == bool
  blocked = lambda q, k, v, key: blocked_causal_attention(
      q, k, v, tile=16, dropout_rate=rate, dropout_rng=key)
  reference = lambda q, k, v, key: dense(q, k, v, mask, 1 - rate)
  np.testing.assert_allclose(jax.jit(blocked)(q, k, v, key),
                             reference(q, k, v, key), **TOL)
  grads = [jax.jit(jax.grad(lambda *a: (f(*a) * w).sum(), (0, 1, 2)))(
      q, k, v, key) for f in (blocked, reference)]
  for got, want in zip(*grads):  # d/dq, d/dk, d/dv
    np.testing.assert_allclose(got, want, **TOL)
  # dropout changed something: the undropped result is far
  assert not np.allclose(jax.jit(blocked)(q, k, v, key), dense(q, k, v),
                         **TOL)


@pytest.mark.slow
def test_dropout_mask_keeps_its_fraction():
  """About 1 - rate kept, over 4 x 256^2 draws; tiles draw apart."""
  mask = np.asarray(dropout_mask(jax.random.key(0), 2, 2, 256, tile=64,
                                 dropout_rate=0.2))
  assert abs(mask.mean() - 0.8) < 0.01
  assert not np.array_equal(mask[..., :64, :64], mask[..., 64:128, :64])
  assert not np.array_equal(mask[..., 64:128, :64], mask[..., 64:128, 64:128])
  assert not np.array_equal(mask[0], mask[1])  # batch and heads
  assert not np.array_equal(mask[:, 0], mask[:, 1])


def test_blocked_dropout_rate_zero_is_todays_computation():
  """Rate 0 with a key: the same traced program and the same numbers."""
  q, k, v, _ = _qkvw(50)
  key = jax.random.key(3)
  plain = lambda q, k, v: blocked_causal_attention(q, k, v, tile=16)
  rate0 = lambda q, k, v: blocked_causal_attention(
      q, k, v, tile=16, dropout_rate=0.0, dropout_rng=key)
  for f in (lambda g: g, lambda g: jax.grad(lambda *a: g(*a).sum(), (0, 1, 2))):
    assert str(jax.make_jaxpr(f(rate0))(q, k, v)) == str(
        jax.make_jaxpr(f(plain))(q, k, v))
  np.testing.assert_array_equal(jax.jit(rate0)(q, k, v),
                                jax.jit(plain)(q, k, v))


def test_blocked_dropout_keys_differ_and_repeat():
  q, k, v, _ = _qkvw(50)
  blocked = jax.jit(lambda key: blocked_causal_attention(
      q, k, v, tile=16, dropout_rate=0.2, dropout_rng=key))
  a, b = blocked(jax.random.key(1)), blocked(jax.random.key(2))
  assert not np.allclose(a, b, **TOL)
  np.testing.assert_array_equal(blocked(jax.random.key(1)), a)
  with pytest.raises(ValueError, match="needs a dropout_rng"):
    blocked_causal_attention(q, k, v, tile=16, dropout_rate=0.2)


def test_attention_with_past_equals_dense():
  """A chunk after 20 valid cached positions (of 32) sees 20 + itself."""
  q, k, v, _ = _qkvw(30)
  S, length = 32, 20
  pad = lambda x: jnp.pad(x[:, :, :length], ((0, 0), (0, 0), (0, S - length),
                                             (0, 0)))
  past_k, past_v = pad(k).transpose(0, 1, 3, 2), pad(v)  # (B,H,K,S), (B,H,S,K)
  with_past = jax.jit(attention_with_past, static_argnames="tile")
  got = with_past(q[:, :, length:], k[:, :, length:], v[:, :, length:],
                  past_k, past_v, jnp.int32(length), tile=4)
  np.testing.assert_allclose(got, dense(q, k, v)[:, :, length:], **TOL)
  empty = with_past(q, k, v, jnp.zeros_like(past_k), jnp.zeros_like(past_v),
                    jnp.int32(0), tile=8)
  np.testing.assert_allclose(empty, dense(q, k, v), **TOL)


def test_attention_over_cache_equals_dense():
  """One position written into the cache at `length`, then read: what
  dense attention gives that position (the decoding step, in place)."""
  q, k, v, _ = _qkvw(30)
  S, length = 32, 20
  pad = lambda x: jnp.pad(x[:, :, :length + 1],
                          ((0, 0), (0, 0), (0, S - length - 1), (0, 0)))
  cache_k, cache_v = pad(k).transpose(0, 1, 3, 2), pad(v)
  got = jax.jit(attention_over_cache)(q[:, :, length:length + 1], cache_k,
                                      cache_v, jnp.int32(length))
  np.testing.assert_allclose(got, dense(q, k, v)[:, :, length:length + 1],
                             **TOL)

def _models(config, **overrides):
  config.model.update(overrides)
  config.model.attention_tile = 8
  dense_model = make_model(config.model, V)
  return dense_model, dense_model.with_settings(attention="blocked")


@pytest.mark.slow
def test_model_logits_and_grads_equal(smoke_config):
  """21 positions: two tiles of 8 and a padded third."""
  dense_model, blocked_model = _models(smoke_config)
  tokens = jax.random.randint(jax.random.key(1), (2, 21), 0, V)
  params = dense_model.init(jax.random.key(0), tokens)["params"]

  def loss(params, model):
    logits = model.apply({"params": params}, tokens)  # (B, T, V)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

  logits = jax.jit(lambda m: m.apply({"params": params}, tokens),
                   static_argnums=0)
  np.testing.assert_allclose(logits(blocked_model), logits(dense_model), **TOL)
  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (want_loss, want), (got_loss, got) = (
      value_and_grad(params, m) for m in (dense_model, blocked_model))
  np.testing.assert_allclose(got_loss, want_loss, **TOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


@pytest.mark.slow
def test_cached_greedy_decoding_equal(smoke_config):
  """Prefill, one token at a time, and a slide (re-prefill) past max_len 32."""
  dense_model, blocked_model = _models(smoke_config)
  params = dense_model.init(jax.random.key(0),
                            jnp.zeros((1, 8), jnp.int32))["params"]
  leaves, tree = jax.tree.flatten(params)  # weights large enough to vary
  keys = jax.random.split(jax.random.key(5), len(leaves))
  params = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves)])
  prompt = jax.random.randint(jax.random.key(2), (2, 20), 0, V)
  greedy = SamplingOptions(max_new_tokens=40, temperature=0)
  dense_tokens, blocked_tokens = (
      np.asarray(sampling.generate(params, m, prompt, jax.random.key(0),
                                   greedy))
      for m in (dense_model, blocked_model))
  np.testing.assert_array_equal(blocked_tokens, dense_tokens)
  assert len(np.unique(dense_tokens)) > 1


def test_config_refuses_bad_settings(smoke_config):
  smoke_config.model.attention = "flash"
  with pytest.raises(UserError, match="'dense' or 'blocked'"):
    validate(smoke_config)
  smoke_config.model.update(attention="blocked", dropout=0.1)
  validate(smoke_config)  # blocked attention drops weights as dense does
  smoke_config.model.update(attention_tile=0)
  with pytest.raises(UserError, match="attention_tile must be a positive"):
    validate(smoke_config)


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
def test_blocked_model_trains_with_dropout(smoke_config, monkeypatch,
                                           scan_layers):
  """Dropout 0.2: finite loss and grads, a key changes them, and train=False
  is the deterministic model (dense's logits); the blocked attention gets
  the rate and a key only when training."""
  dense_model, model = _models(smoke_config, dropout=0.2,
                               scan_layers=scan_layers)
  calls = []

  def recording(*args, **kwargs):
    calls.append((kwargs["dropout_rate"], kwargs["dropout_rng"] is not None))
    return blocked_causal_attention(*args, **kwargs)

  monkeypatch.setattr(transformer, "blocked_causal_attention", recording)
  tokens = jax.random.randint(jax.random.key(1), (2, 21), 0, V)
  params = model.init(jax.random.key(0), tokens)["params"]
  calls.clear()

  @jax.jit
  def loss_and_grads(params, key):
    def loss(params):
      logits = model.apply({"params": params}, tokens, train=True,
                           rngs={"dropout": key})
      return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])
    return jax.value_and_grad(loss)(params)

  (loss1, grads1), (loss2, grads2) = (loss_and_grads(params, jax.random.key(s))
                                      for s in (1, 2))
  assert set(calls) == {(0.2, True)}
  for value in (loss1, loss2, *jax.tree.leaves((grads1, grads2))):
    assert np.all(np.isfinite(value))
  assert loss1 != loss2
  assert not np.allclose(grads1["embed"]["embedding"],
                         grads2["embed"]["embedding"])
  calls.clear()
  logits = jax.jit(lambda m: m.apply({"params": params}, tokens, train=False),
                   static_argnums=0)
  np.testing.assert_allclose(logits(model), logits(dense_model), **TOL)
  assert set(calls) == {(0.0, False)}


def test_inspect_shows_a_blocked_model_dense_weights(smoke_config):
  dense_model, blocked_model = _models(smoke_config)
  tokens = np.arange(6) % V
  params = dense_model.init(jax.random.key(0), tokens[None])["params"]
  weights = blocked_model.internals(params, tokens).values
  np.testing.assert_array_equal(
      weights, dense_model.internals(params, tokens).values)
  assert weights.shape == (2, 2, 6, 6)
  np.testing.assert_allclose(weights.sum(-1), 1, rtol=1e-6)
