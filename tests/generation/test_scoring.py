"""Scoring a text in one batched pass equals the model's own next-token
log-probabilities, one text at a time; windows past the context."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax import tasks
from lm_jax.errors import UserError
from lm_jax.generation import sampling, scoring
from lm_jax.models import make_model

from configs import char_lstm, char_tf

V = 11


@pytest.fixture(scope="module")
def lm():
  """The smoke Transformer (W = 32) with weights large enough to vary."""
  model = make_model(char_tf.get_config("smoke").model, V)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  params = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) * 0.5
                                     for k, x in zip(keys, leaves)])
  return model, params


def _reference(params, model, text):
  """log p(text[t] | text[:t]) for t >= 1, from a full pass over at most
  the last `keep_on_slide(W)` .. W tokens (the windows' rule), one text."""
  if len(text) < 2:
    return np.zeros(0, np.float32)
  logp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray(
      [text[:-1]], jnp.int32))[0].astype(jnp.float32), -1)
  return np.asarray(logp[np.arange(len(text) - 1), text[1:]])


def _text(n, seed):
  return [int(t) for t in np.random.default_rng(seed).integers(0, V, n)]


def test_a_batch_scores_each_text_as_alone(lm):
  model, params = lm
  texts = [_text(n, n) for n in (1, 2, 7, 20, 33)]
  got = scoring.score(params, model, texts, top=3)
  for text, s in zip(texts, got):
    assert s.logprobs.shape == (len(text),) and s.top_ids.shape == (
        len(text), 3)
    assert np.isnan(s.logprobs[0]) and (s.top_ids[0] == -1).all()
    np.testing.assert_allclose(s.logprobs[1:], _reference(params, model, text),
                               atol=1e-5)
    # The alternatives are the likeliest, best first, the chosen among them
    # when it is the likeliest.
    assert (np.diff(s.top_logprobs[1:], axis=-1) <= 0).all()
    assert (s.logprobs[1:] <= s.top_logprobs[1:, 0] + 1e-6).all()


def test_following_is_the_next_tokens_distribution_after_the_last_window(lm):
  model, params = lm
  W = model.context_length
  texts = [_text(1, 1), _text(9, 2), _text(W, 3), _text(W + 1, 4)]
  got = scoring.score(params, model, texts, top=2, following=True)
  plain = scoring.score(params, model, texts, top=2)
  for text, s, p in zip(texts, got, plain):
    # After the last W tokens, as sampling continues a text.
    logits = model.apply({"params": params}, jnp.asarray([text[-W:]],
                                                         jnp.int32))
    np.testing.assert_allclose(s.following, jax.nn.log_softmax(
        logits[0, -1].astype(jnp.float32)), atol=1e-5)
    np.testing.assert_allclose(s.logprobs, p.logprobs, atol=1e-5)
  assert plain[0].following is None


def test_past_the_context_each_token_sees_half_a_window_to_a_window(lm):
  model, params = lm
  W = model.context_length
  keep = sampling.keep_on_slide(W)
  assert scoring.windows(W + 1, W) == [(0, W, 0)]
  spans = scoring.windows(100, W)
  seen = 0  # targets scored so far
  for start, length, first in spans:
    assert length <= W and start + first == seen
    assert first == 0 or first + 1 == keep  # the new target sees keep tokens
    seen = start + length
  assert seen == 99
  text = _text(100, 0)
  s, = scoring.score(params, model, [text])
  for start, length, first in spans:
    ref = _reference(params, model, text[start:start + length + 1])
    np.testing.assert_allclose(s.logprobs[start + 1 + first:
                                          start + 1 + length], ref[first:],
                               atol=1e-5)


def test_a_recurrent_model_reads_a_long_text_in_one_window():
  model = make_model(char_lstm.get_config("smoke").model, V)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  assert scoring.windows(500, model.context_length) == [(0, 499, 0)]
  text = _text(70, 1)
  s, = scoring.score(params, model, [text, text[:5]])[:1]
  np.testing.assert_allclose(s.logprobs[1:], _reference(params, model, text),
                             atol=1e-5)


def test_loglikelihoods_sum_the_continuation_and_say_if_greedy(lm):
  model, params = lm
  context, more = _text(9, 2), _text(4, 3)
  s, = scoring.score(params, model, [context + more], top=1)
  greedy = [int(i) for i in s.top_ids[9:, 0]]
  (total, is_greedy), (_, also_greedy) = scoring.loglikelihoods(
      params, model, [(context, more), (context, greedy)])
  assert total == pytest.approx(float(np.sum(s.logprobs[9:])), abs=1e-5)
  assert also_greedy and is_greedy == (more == greedy)
  with pytest.raises(UserError, match="pair 0: the context"):
    scoring.loglikelihoods(params, model, [([], more)])


def test_empty_texts_and_bad_top_are_refused(lm):
  model, params = lm
  with pytest.raises(UserError, match="text 1 is empty"):
    scoring.score(params, model, [[1], []])
  with pytest.raises(UserError, match="top must be in 0..11"):
    scoring.score(params, model, [[1, 2]], top=12)


def test_a_run_that_cannot_score_is_refused_by_its_task():
  for name in ("masked", "pairs"):
    with pytest.raises(UserError, match="scoring a text needs a run that can "
                       "score a text"):
      tasks.TASKS[name].score(None, [[1, 2]])
