"""Beam search over an encoder-decoder, as one pure jitted function.

It reads a model only through the interface of
`lm_jax.models.seq2seq.Seq2SeqModel`: `encode` once, `initial_state`,
then `extend` one token per step for all B * K hypotheses at once (K the
beam width), the decoder state's rows reordered with `jnp.take` after each
step to follow the hypotheses kept.

Two sets per source row, as in Wu et al. (2016) and Flax's lm1b decoder:
the K best *alive* hypotheses (ranked by log-probability) and the K best
*finished* ones (ended by EOS, or by reaching `max_len` tokens; ranked by
log-probability / length ** `length_penalty`, length counting EOS). PAD
and BOS are never generated. The search stops early once no alive
hypothesis can beat the worst finished one: log-probabilities only fall,
so an alive one scores at most its log-probability / max_len ** penalty
(a penalty >= 0). A candidate that ends a hypothesis counts only when it is
among the K best candidates of its step (as fairseq does), so that K = 1
with no length penalty is greedy decoding. With K at least the number of
candidates of any step (hypotheses times tokens) the search is exhaustive:
tests/generation/test_beam.py checks it against brute force.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID


def take_rows(tree: Any, rows: jax.Array) -> Any:
  """Rows `rows` of every batch-leading leaf; scalar leaves are shared."""
  return jax.tree.map(
      lambda leaf: jnp.take(leaf, rows, axis=0) if jnp.ndim(leaf) else leaf,
      tree)


def _best(k: int, scores: jax.Array, *arrays: jax.Array):
  """The k best of scores (B, N), and the matching rows of each (B, N, ...)."""
  top, index = jax.lax.top_k(scores, k)  # (B, k)
  return (top,) + tuple(
      jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)),
                          axis=1) for a in arrays)


@functools.partial(jax.jit, static_argnames=("model", "beam_width", "max_len"))
def beam_search(params, model, src: jax.Array, beam_width: int,
                max_len: int, length_penalty: float | jax.Array = 0.0
                ) -> tuple[jax.Array, jax.Array]:
  """The `beam_width` best replies to each source row of src (B, S).

  Returns tokens (B, K, max_len), best first, each a reply then EOS then
  PAD (no EOS if it reached max_len), and their scores (B, K): summed
  log-probabilities / length ** length_penalty (-inf: fewer than K found).
  `max_len` counts EOS: at most `model.max_target_len + 1`. The length
  penalty is traced: changing it compiles nothing new.
  """
  if not 0 < max_len <= model.max_target_len + 1:
    raise ValueError(f"max_len must be in 1..{model.max_target_len + 1} "
                     f"(the decoder's positions), got {max_len}")
  B, K = src.shape[0], beam_width
  apply = lambda method, *args: model.apply({"params": params}, *args,
                                            method=method)
  state = apply(model.initial_state, apply(model.encode, src))
  state = take_rows(state, jnp.repeat(jnp.arange(B), K))  # (B * K, ...)
  penalty = lambda n: jnp.asarray(n, jnp.float32) ** length_penalty
  empty = jnp.full((B, K, max_len), PAD_ID, jnp.int32)
  # Only the first of the K copies of each row is alive at the start.
  alive = jnp.full((B, K), -jnp.inf).at[:, 0].set(0.0)

  def step(carry):
    t, state, last, alive_seq, alive, done_seq, done = carry
    logits, state = apply(model.extend, last[:, None], state)  # (B*K, 1, V)
    V = logits.shape[-1]
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
    logp = logp.at[:, jnp.array([PAD_ID, BOS_ID])].set(-jnp.inf)
    grown = (alive[..., None] + logp.reshape(B, K, V)).reshape(B, K * V)
    # 2K candidates: at most K end in EOS, so K of them stay alive.
    top, index = jax.lax.top_k(grown, 2 * K)  # (B, 2K)
    parent, token = index // V, index % V
    seqs = jnp.take_along_axis(alive_seq, parent[..., None], axis=1)
    seqs = seqs.at[:, :, t].set(token)  # (B, 2K, max_len)
    ends = token == EOS_ID
    # A hypothesis ends only among the K best candidates (as in fairseq):
    # then width 1 is greedy decoding.
    first_k = jnp.arange(2 * K) < K
    finished = jnp.where((ends | (t == max_len - 1)) & first_k,
                         top / penalty(t + 1), -jnp.inf)
    done, done_seq = _best(K, jnp.concatenate([done, finished], axis=1),
                           jnp.concatenate([done_seq, seqs], axis=1))
    alive, alive_seq, parent, token = _best(
        K, jnp.where(ends, -jnp.inf, top), seqs, parent, token)
    rows = (jnp.arange(B)[:, None] * K + parent).reshape(-1)
    return (t + 1, take_rows(state, rows), token.reshape(-1), alive_seq,
            alive, done_seq, done)

  def going(carry):
    t, _, _, _, alive, _, done = carry
    hopeful = alive.max(-1) / penalty(max_len) >= done.min(-1)  # (B,)
    return (t < max_len) & hopeful.any()

  carry = (jnp.int32(0), state, jnp.full((B * K,), BOS_ID, jnp.int32),
           empty, alive, empty, jnp.full((B, K), -jnp.inf))
  *_, done_seq, done = jax.lax.while_loop(going, step, carry)
  return done_seq, done


def beam_replies(params, model, tokenizer, prompts: list[str],
                 beam_width: int, length_penalty: float = 0.0
                 ) -> list[tuple[str, float]]:
  """The best reply to each prompt as text, with its score: what
  `python -m lm_jax.sample --beam=K` prints. Bad prompts are UserErrors
  (`lm_jax.generation.replies.encode_prompts`)."""
  from lm_jax.generation import replies
  src = replies.encode_prompts(tokenizer, prompts, model.max_source_len)
  tokens, scores = beam_search(params, model, jnp.asarray(src), beam_width,
                               model.max_target_len + 1, length_penalty)
  texts = replies.reply_texts(tokenizer, tokens[:, 0])
  return list(zip(texts, scores[:, 0].tolist()))
