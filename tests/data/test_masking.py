"""Masking (lm_jax/data/masking.py): the tokens BERT's and diffusion's
schemes hide, their rates and weights, and the `<mask>` a tokenizer
reserves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.data import masking, tokenizers
from lm_jax.special_tokens import MASK, MASK_ID

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


def scheme(kind="bert", vocab=50, **changes):
  return masking.MaskScheme(**{**dict(scheme=kind, rate=0.15, mask_share=0.8,
                                      random_share=0.1, vocab_size=vocab),
                               **changes})


def test_tokenizer_reserves_mask_only_when_asked():
  plain = tokenizers.build_tokenizer("char", "abc")
  assert plain.vocab == ["<unk>", "a", "b", "c"]
  masked = tokenizers.build_tokenizer("char", "abc", mask=True)
  assert masked.vocab[MASK_ID] == MASK and masked.vocab[-3:] == list("abc")
  word = tokenizers.build_tokenizer("word", "a b a", mask=True)
  assert word.vocab[MASK_ID] == MASK
  assert list(masked.encode("<mask>")) != [MASK_ID]  # never read from text


def test_bert_masking_statistics_and_padding():
  B, T = 4000, 40
  key_t, key_m = jax.random.split(jax.random.key(0))
  tokens = jax.random.randint(key_t, (B, T), masking.FIRST_TEXT_ID, 50)
  lengths = jnp.arange(B) % 31 + 10  # 10..40 valid, then padding
  valid = jnp.arange(T) < lengths[:, None]
  inputs, targets, weights = map(np.asarray, masking.mask_tokens(
      key_m, tokens, valid, scheme()))
  chosen, valid, tokens = weights > 0, np.asarray(valid), np.asarray(tokens)
  assert not chosen[~valid].any() and (inputs[~valid] == tokens[~valid]).all()
  assert (chosen.sum(1) == np.maximum(np.round(0.15 * lengths), 1)).all()
  assert set(np.unique(weights)) == {0.0, 1.0}
  assert (targets == tokens).all()
  assert (inputs[~chosen] == tokens[~chosen]).all()
  hidden = (inputs == MASK_ID)[chosen].mean()
  kept = (inputs == tokens)[chosen].mean()
  assert abs(hidden - 0.8) < 0.01
  # A random token equals the original 1/45 of the time: kept ~ 0.1 + 0.1/45.
  assert abs(kept - (0.1 + 0.1 / 45)) < 0.01
  assert abs(1 - hidden - kept - 0.1 * 44 / 45) < 0.01


def test_diffusion_masking_rate_uniform_and_weights():
  B, T = 6000, 20
  tokens = jnp.full((B, T), 7)
  valid = jnp.arange(T) < jnp.where(jnp.arange(B) % 2, T, 12)[:, None]
  inputs, _, weights = map(np.asarray, masking.mask_tokens(
      jax.random.key(1), tokens, valid, scheme("diffusion")))
  chosen, valid = weights > 0, np.asarray(valid)
  assert not chosen[~valid].any()
  assert (inputs[chosen] == MASK_ID).all() and (inputs[~chosen] == 7).all()
  n = valid.sum(1)
  k = chosen.sum(1)
  # Every hidden position weighs n / k (1 / rate): each row's weights sum
  # to its n, so the weighted mean over the batch is sum(w nats) / tokens.
  np.testing.assert_allclose(weights.sum(1), n, rtol=1e-5)
  for length in (12, 20):
    counts = np.bincount(k[n == length], minlength=length + 1)[1:]
    assert counts.min() > 0.75 * counts.mean()  # uniform on 1..n
    assert counts.max() < 1.25 * counts.mean()


def test_stratified_rates_one_per_stratum_and_uniform():
  B = 16
  draws = np.stack([np.asarray(masking.rates(jax.random.key(i), B, True))
                    for i in range(2000)])  # (2000, B)
  # One rate in each 1/B of [0, 1), every batch.
  strata = np.sort(np.floor(draws * B).astype(int), axis=1)
  assert (strata == np.arange(B)).all()
  # Each row's rate is still U[0, 1) (the bound's expectation unchanged):
  # mean 1/2, variance 1/12, any row alike.
  flat = draws.ravel()
  assert abs(flat.mean() - 0.5) < 0.01 and abs(flat.var() - 1 / 12) < 0.005
  assert abs(draws[:, 3].mean() - 0.5) < 0.03
  # The batch mean varies far less than B independent draws' (1/(12 B)).
  assert draws.mean(1).var() < 0.1 / (12 * B)
  plain = np.asarray(masking.rates(jax.random.key(0), 4000, False))
  assert abs(plain.mean() - 0.5) < 0.02


def test_stratified_bound_unbiased_and_less_variable():
  """The diffusion loss (sum(w nats) / n, the bound's estimate) of a fixed
  "model" (a token's loss depends on how many are hidden around it) has
  the same mean under both samplers, and a smaller spread across batches
  under the stratified one."""
  B, T, batches = 8, 32, 600
  tokens = jnp.full((B, T), 7)
  valid = jnp.ones((B, T), bool)

  def losses(stratified):
    s = scheme("diffusion", stratified=stratified)

    @jax.jit
    def one(key):
      inputs, _, weights = masking.mask_tokens(key, tokens, valid, s)
      hidden = (inputs == MASK_ID).mean(1, keepdims=True)  # (B, 1)
      nats = 0.2 + 2.0 * hidden  # harder with more of the row hidden
      return (weights * nats).sum() / (B * T)

    return np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(3),
                                                     batches)))

  plain, strat = losses(False), losses(True)
  # Expected: E_k[0.2 + 2 k / T] over k uniform in 1..T = 0.2 + (T + 1) / T.
  expected = 0.2 + (T + 1) / T
  assert abs(strat.mean() - expected) < 3 * strat.std() / np.sqrt(batches)
  assert abs(plain.mean() - expected) < 4 * plain.std() / np.sqrt(batches)
  assert strat.std() < 0.5 * plain.std()  # measured: 0.35
