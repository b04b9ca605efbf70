"""Beam search (lm_jax/generation/beam.py) on toy encoder-decoders with a tiny
vocabulary: as wide as the tree it is exhaustive, so it must find what
brute force over every reply finds; width 1 is greedy decoding."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.data import pairs
from lm_jax.data.tokenizers import BOS_ID, CharTokenizer, EOS_ID, PAD_ID
from lm_jax.errors import UserError
from lm_jax.generation.beam import beam_replies, beam_search, take_rows
from lm_jax.models.lstm_s2s import LSTMSeq2Seq
from lm_jax.models.transformer_s2s import TransformerSeq2Seq

V, L = 6, 4  # ids: <unk>, <pad>, <bos>, <eos>, two letters; replies <= 4
WORDS = (0, 4, 5)  # what a reply is made of (PAD and BOS never generated)
SRC = jnp.array([[4, 5, 5, PAD_ID], [5, 4, 0, 4], [4, PAD_ID, PAD_ID, PAD_ID]])
MODELS = {
    "lstm_s2s": LSTMSeq2Seq.from_config(dict(
        max_source_len=4, max_target_len=3, num_layers=1, embed_dim=8,
        hidden_size=8, dropout=0.0, attention=True, input_feeding=True), V),
    "transformer_s2s": TransformerSeq2Seq.from_config(dict(
        max_source_len=4, max_target_len=3, num_layers=1, num_heads=2,
        d_model=8, dropout=0.0, gelu_approximate=True, position="rope",
        cross_position="both", norm="rmsnorm", qk_norm=True, mlp="relu2",
        zero_init_proj=False, logit_softcap=0.0), V)}


@functools.cache
def _params(kind: str):
  """Random parameters, large enough that the replies' scores spread."""
  model = MODELS[kind]
  shapes = jax.eval_shape(model.init, jax.random.key(0), SRC,
                          jnp.zeros((3, L), jnp.int32))["params"]
  keys = iter(jax.random.split(jax.random.key(7), len(jax.tree.leaves(shapes))))
  return jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape),
                      shapes)


def _replies() -> list[tuple[int, ...]]:
  """Every reply of at most L tokens: words then EOS, or L words (cut)."""
  ended = [words + (EOS_ID,) for n in range(L)
           for words in itertools.product(WORDS, repeat=n)]
  return ended + list(itertools.product(WORDS, repeat=L))


@functools.partial(jax.jit, static_argnames="model")
def _log_probs(params, model, src, tgt_in, targets):
  """Teacher-forced log-probability of each row's non-PAD targets."""
  logp = jax.nn.log_softmax(model.apply({"params": params}, src, tgt_in))
  picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return (picked * (targets != PAD_ID)).sum(-1)


def _brute_force(kind: str, length_penalty: float):
  """Every reply to every source row, scored: (replies, scores (B, N))."""
  replies = _replies()
  tgt = np.full((len(replies), L + 1), PAD_ID, np.int32)
  tgt[:, 0] = BOS_ID
  for i, reply in enumerate(replies):
    tgt[i, 1:len(reply) + 1] = reply
  B, N = SRC.shape[0], len(replies)
  logp = _log_probs(_params(kind), MODELS[kind], jnp.repeat(SRC, N, axis=0),
                    jnp.tile(tgt[:, :-1], (B, 1)), jnp.tile(tgt[:, 1:], (B, 1)))
  lengths = np.array([len(r) for r in replies], np.float32)
  return replies, np.asarray(logp).reshape(B, N) / lengths**length_penalty


def _as_tuple(row: np.ndarray) -> tuple[int, ...]:
  """A beam row (reply, EOS, PAD...) as the reply tuple brute force uses."""
  row = [int(t) for t in row]
  return tuple(row[:row.index(EOS_ID) + 1] if EOS_ID in row else row)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_brute_force(kind, length_penalty):
  """Width 108 keeps every candidate of every step (27 hypotheses of 3
  words times 4 tokens at the last), so its K finished replies are the K
  best of all 121, scores and order."""
  replies, scores = _brute_force(kind, length_penalty)
  K = 108
  tokens, found = beam_search(_params(kind), MODELS[kind], SRC, K, L,
                              length_penalty)
  for b in range(SRC.shape[0]):
    order = np.argsort(-scores[b], kind="stable")[:K]
    gap = scores[b][order[0]] - scores[b][order[1]]
    assert gap > 1e-4, "a near tie: the test would not be decisive"
    np.testing.assert_allclose(found[b], scores[b][order], rtol=1e-5,
                               atol=1e-5)
    assert _as_tuple(tokens[b, 0]) == replies[order[0]]
    for row, score in zip(tokens[b], found[b]):  # each its own score
      np.testing.assert_allclose(
          score, scores[b][replies.index(_as_tuple(row))], rtol=1e-5)


def _greedy(params, model, src) -> list[tuple[int, ...]]:
  """The uncached greedy reply: the whole prefix re-scored every step,
  the likeliest token other than PAD and BOS appended."""
  B = src.shape[0]
  tgt = np.full((B, L), PAD_ID, np.int32)
  tgt[:, 0] = BOS_ID
  score = jax.jit(lambda tgt: model.apply({"params": params}, src, tgt))
  for t in range(L):
    logits = np.array(score(jnp.asarray(tgt))[:, t])  # (B, V)
    logits[:, [PAD_ID, BOS_ID]] = -np.inf
    if t + 1 < L:
      tgt[:, t + 1] = logits.argmax(-1)
    else:
      last = logits.argmax(-1)
  rows = np.concatenate([tgt[:, 1:], last[:, None]], axis=1)
  return [_as_tuple(row) for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_width_one_is_greedy(kind):
  params, model = _params(kind), MODELS[kind]
  tokens, _ = beam_search(params, model, SRC, 1, L)
  assert [_as_tuple(row) for row in tokens[:, 0]] == _greedy(params, model,
                                                             SRC)


def test_take_rows_shares_scalar_leaves():
  tree = {"rows": jnp.arange(6).reshape(3, 2), "length": jnp.int32(5)}
  taken = take_rows(tree, jnp.array([2, 2, 0]))
  np.testing.assert_array_equal(taken["rows"], [[4, 5], [4, 5], [0, 1]])
  assert int(taken["length"]) == 5


def test_beam_replies_are_text():
  """SRC's first and last rows typed as text: the same best replies."""
  params, model = _params("lstm_s2s"), MODELS["lstm_s2s"]
  tokenizer = CharTokenizer(["<unk>", "<pad>", "<bos>", "<eos>", "a", "b"])
  tokens, scores = beam_search(params, model, SRC, 1, L)
  got = beam_replies(params, model, tokenizer, ["abb", "a"], 1)
  assert [text for text, _ in got] == [
      tokenizer.decode(pairs.reply_ids(tokens[b, 0])) for b in (0, 2)]
  np.testing.assert_allclose([score for _, score in got], scores[::2, 0])
  with pytest.raises(UserError, match="more than the encoder takes"):
    beam_replies(params, model, tokenizer, ["abbab"], 1)


def test_max_len_is_bounded_by_the_decoder():
  with pytest.raises(ValueError, match="max_len must be in 1..4"):
    beam_search(_params("lstm_s2s"), MODELS["lstm_s2s"], SRC, 2, L + 1)
