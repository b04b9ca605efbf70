import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.generation.sampling import sample_logits, SamplingOptions

# A fixed distribution over 6 tokens: probabilities .4 .3 .15 .1 .05 0+.
PROBS = np.array([0.4, 0.3, 0.15, 0.1, 0.05, 1e-9])
LOGITS = jnp.log(jnp.asarray(PROBS))[None, :].repeat(2000, axis=0)


def _draw(**options):
  return np.asarray(sample_logits(jax.random.key(0), LOGITS,
                                  SamplingOptions(**options)))


def test_greedy_is_argmax():
  logits = jax.random.normal(jax.random.key(1), (5, 9))
  np.testing.assert_array_equal(
      sample_logits(jax.random.key(0), logits, SamplingOptions(temperature=0)),
      jnp.argmax(logits, -1))


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


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1),
                                 dict(top_p=0), dict(top_p=1.5),
                                 dict(top_k=-1)])
def test_bad_options(bad):
  with pytest.raises(UserError):
    SamplingOptions(**bad)
