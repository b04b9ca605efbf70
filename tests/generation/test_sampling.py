import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.generation.sampling import sample_logits, SamplingOptions

# A fixed distribution over 6 tokens: probabilities .4 .3 .15 .1 .05 0+.
PROBS = np.array([0.4, 0.3, 0.15, 0.1, 0.05, 1e-9])
LOGITS = jnp.log(jnp.asarray(PROBS))[None, :].repeat(2000, axis=0)


def _draw(**options):
  o = SamplingOptions(**options)
  return np.asarray(sample_logits(jax.random.key(0), LOGITS, o.temperature,
                                  o.top_k, o.top_p))


def test_greedy_is_argmax():
  logits = jax.random.normal(jax.random.key(1), (5, 9))
  np.testing.assert_array_equal(
      sample_logits(jax.random.key(0), logits, 0.0), jnp.argmax(logits, -1))


def test_top_k_only_picks_the_k_likeliest():
  assert set(_draw(top_k=2)) == {0, 1}


def test_top_p_only_picks_the_nucleus():
  # .4 + .3 = .7 < .8, so the nucleus for p=.8 is {0, 1, 2}.
  assert set(_draw(top_p=0.8)) == {0, 1, 2}
  assert set(_draw(top_p=0.4)) == {0}


def _nucleus(probs, p):
  """The fewest likeliest tokens whose probabilities sum to at least p."""
  order = np.argsort(-probs)
  size = int(np.searchsorted(np.cumsum(probs[order]), p - 1e-12)) + 1
  return set(order[:size].tolist())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.9])
def test_top_p_with_temperature_picks_exactly_the_nucleus(temperature, top_p):
  tempered = PROBS ** (1 / temperature)
  allowed = _nucleus(tempered / tempered.sum(), top_p)
  assert set(_draw(temperature=temperature, top_p=top_p)) == allowed


def test_top_k_and_top_p_together():
  # top-k 3 leaves .4 .3 .15 (renormalised .47 .35 .18): p=.5 keeps two.
  assert set(_draw(top_k=3, top_p=0.5)) == {0, 1}
  assert set(_draw(top_k=1, temperature=5.0)) == {0}


def test_greedy_ignores_the_filters():
  np.testing.assert_array_equal(_draw(temperature=0, top_k=3, top_p=0.2), 0)


def test_temperature_one_follows_the_distribution():
  counts = np.bincount(_draw(), minlength=6) / 2000
  np.testing.assert_allclose(counts, PROBS, atol=0.04)


def test_each_row_keeps_its_own_options():
  # One batch: even rows top-k 1, odd rows top-k 2; then the first half
  # top-p .4 (the nucleus {0}), the second none, the even rows greedy.
  B = LOGITS.shape[0]
  top_k = jnp.asarray([1, 2] * (B // 2))
  got = np.asarray(jax.jit(sample_logits)(jax.random.key(0), LOGITS, 1.0,
                                           top_k, 1.0))
  assert set(got[::2]) == {0} and set(got[1::2]) == {0, 1}
  top_p = jnp.where(jnp.arange(B) < B // 2, 0.4, 1.0)
  temperature = jnp.where(jnp.arange(B) % 2, 1.0, 0.0)
  got = np.asarray(sample_logits(jax.random.key(1), LOGITS, temperature, 0,
                                 top_p))
  assert set(got[:B // 2]) == {0} and set(got[::2]) == {0}
  assert set(got[B // 2 + 1::2]) == set(range(5))  # 1e-9: never


def test_traced_per_row_options_pick_what_one_row_picks():
  """The server's step: rows with their own keys and options, vmapped in
  one program, pick the tokens each row picks alone with its options
  fixed (as lm-jax-sample's program has them)."""
  logits = jax.random.normal(jax.random.key(0), (1, 50)) * 3
  cases = [(0.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 7, 1.0), (1.0, 0, 0.8),
           (0.9, 10, 0.6), (1.0, 50, 1.0)]
  temperature, top_k, top_p = (jnp.asarray(c) for c in zip(*cases))
  rows = jax.jit(jax.vmap(sample_logits, in_axes=(0, None, 0, 0, 0)))
  for seed in range(5):
    keys = jax.random.split(jax.random.key(seed), len(cases))
    got = rows(keys, logits, temperature, top_k, top_p)  # (rows, 1)
    for i, options in enumerate(cases):
      want = sample_logits(keys[i], logits, *options)[0]
      assert int(got[i, 0]) == int(want)


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1),
                                 dict(top_p=0), dict(top_p=1.5),
                                 dict(top_k=-1), dict(presence_penalty=2.5),
                                 dict(frequency_penalty=-3),
                                 dict(logit_bias=((1, 101.0),))])
def test_bad_options(bad):
  with pytest.raises(UserError):
    SamplingOptions(**bad)


def test_penalties_change_the_logits_as_openai_writes_them():
  options = SamplingOptions(presence_penalty=0.5, frequency_penalty=0.25,
                            logit_bias=((2, 3.0), (5, -100.0)))
  p = sampling.penalties_of(options, 2, 6)
  p = p._replace(counts=jnp.asarray([[0, 1, 0, 4, 0, 0], [0] * 6]))
  logits = jnp.zeros((2, 6))
  np.testing.assert_allclose(sampling.penalized(logits, p), [
      [0, -0.75, 3, -1.5, 0, -100], [0, 0, 3, 0, 0, -100]])
  # Greedy picks by the changed logits too.
  assert list(sample_logits(jax.random.key(0), LOGITS[:2], 0.0,
                            penalties=p)) == [2, 2]
  off = sampling.penalties_of(None, 2, 6)
  np.testing.assert_array_equal(sampling.penalized(LOGITS[:2], off),
                                LOGITS[:2])


def test_decoding_counts_the_tokens_it_samples():
  d = sampling.Decoding(None, jnp.log(jnp.asarray([[0.1, 0.9, 1e-9]])),
                        jax.random.key(0), None, jnp.int32(1),
                        sampling.penalties_of(SamplingOptions(
                            frequency_penalty=2.0), 1, 3))
  tokens = []
  for _ in range(3):
    d, token = sampling.next_token(d, 0.0, 0, 1.0)
    tokens.append(int(token[0]))
  # 1 is likelier than 0 by log 9 = 2.2 nats: once taken (2 nats off) it
  # still is, twice (4 off) no longer.
  assert tokens == [1, 1, 0]
  assert int(d.penalties.counts.sum()) == 3
