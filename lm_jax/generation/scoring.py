"""Scoring a text: each token's log-probability given the tokens before it.

Works with any language model through its declared interface
(`lm_jax.models.base.LanguageModel`: `__call__` gives next-token logits at
every position, and `context_length`). The rows (prompts of any lengths)
are padded into one batch and scored by one forward pass: the logits at
position t give the log-probability of token t + 1. Padding goes on the
right, which a causal model never looks at; rows and lengths are padded to
powers of two, so that a handful of compiled shapes serve every batch. A
run that cannot score (a masked model sees both sides; an encoder-decoder
scores a reply, not a text) is refused by its task (`lm_jax/tasks/base.py:
Can.SCORE`) before it gets here.

The first token has no score: these models have no begin-of-text token to
condition it on (lm-eval's local-completions reads `token_logprobs[ctxlen:]`
with ctxlen >= 1, so it never asks for it).

Past the context. A text longer than a model's `context_length` W is
scored in overlapping windows of W tokens, all rows of the same batch,
rather than refused: a client such as lm-eval cuts its requests to its
own `max_length`, which need not be W, and one long text should not fail
a whole evaluation. The rule is generation's (`sampling.py`, "Past the
context"): every token is predicted from the last `keep_on_slide(W)` to W
tokens before it, never from fewer, so a text scores as it would be
sampled. A model whose context_length is None (recurrent) reads a row in
one window whatever its length.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.errors import UserError
from lm_jax.generation import sampling


class Scored(NamedTuple):
  """One text of T tokens, scored. Position 0 has no score: NaN in the
  log-probabilities, -1 among the ids."""
  logprobs: np.ndarray  # (T,) float32: log p(token t | tokens < t)
  top_ids: np.ndarray  # (T, K) int32: the K likeliest tokens at t, best first
  top_logprobs: np.ndarray  # (T, K) float32: their log-probabilities
  # (V,) log-probabilities of the token after the text (after its last W
  # tokens, as sampling continues it), when asked for.
  following: np.ndarray | None = None


class _Window(NamedTuple):
  """A row of the batch: tokens [start, start + length) of text `text`,
  whose targets from index `first` on (the others are an earlier window's)
  are scored."""
  text: int
  start: int
  length: int
  first: int


def windows(n: int, W: int | None) -> list[tuple[int, int, int]]:
  """(start, length, first) of the windows that score a text of n tokens:
  inputs [start, start + length) predict targets start + 1 .. start +
  length, of which those from start + 1 + first on are new."""
  inputs = n - 1  # the last token is a target only
  if W is None or inputs <= W:
    return [(0, inputs, 0)]
  # After the first window, each one starts so that its first new target
  # sees `keep` tokens before it, as a slid window does when sampling.
  keep = sampling.keep_on_slide(W)
  out, done = [(0, W, 0)], W  # targets 1 .. done are scored
  while done < inputs:
    start = done - keep + 1
    length = min(W, inputs - start)
    out.append((start, length, done - start))
    done = start + length
  return out


def _bucket(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


@functools.partial(jax.jit, static_argnames=("model", "top"))
def _score_batch(params, model: nn.Module, inputs: jax.Array,
                 targets: jax.Array, last: jax.Array, top: int):
  """Log-probabilities (B, L) of targets (B, L) after inputs (B, L), the
  `top` likeliest ids and log-probabilities (B, L, top), and all the
  log-probabilities (B, V) at positions `last` (B,)."""
  logits = cast(jax.Array, model.apply({"params": params}, inputs))  # (B,L,V)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  chosen = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  top_lp, top_ids = jax.lax.top_k(logp, top)
  at_last = jnp.take_along_axis(logp, last[:, None, None], axis=1)[:, 0]
  return chosen, top_ids, top_lp, at_last


def score(params, model: nn.Module, texts: Sequence[Sequence[int]],
          top: int = 0, following: bool = False) -> list[Scored]:
  """Each text's token log-probabilities, and the `top` likeliest tokens at
  each position (K = top; 0: none), in one forward pass over the batch.

  `texts` are lists of ids of any lengths (at least one token each). The
  caller checks that the run can score (`Can.SCORE`). `following`: also
  the distribution of the next token after each text, in the same pass:
  a text that fits the context is read with its last token; a longer one
  gets one more row, its last W tokens, as sampling continues it (the
  server's `echo` with `max_tokens` 1 samples from it).
  """
  V = model.vocab_size
  if not 0 <= top <= V:
    raise UserError(f"top must be in 0..{V} (the vocabulary), got {top}")
  rows: list[_Window] = []
  W = model.context_length
  # A text that fits is read whole, its last token too, when asked: the
  # window of its n - 1 targets and one more (the next token's, unscored).
  extra = lambda n: int(following and (W is None or n <= W))
  for i, text in enumerate(texts):
    n = len(text)
    if n == 0:
      raise UserError(f"text {i} is empty: give at least one token")
    rows += [_Window(i, *w) for w in windows(n + extra(n), W)]
    if following and not extra(n):  # its last W tokens, no target new
      assert W is not None
      rows.append(_Window(i, n - W, W, W))
  L = _bucket(max(w.length for w in rows))
  if model.context_length is not None:
    L = min(L, model.context_length)
  B = _bucket(len(rows))
  inputs = np.zeros((B, max(L, 1)), np.int32)
  targets = np.zeros_like(inputs)
  last = np.zeros(B, np.int32)
  for r, w in enumerate(rows):
    ids = np.asarray(texts[w.text], np.int32)
    inputs[r, :w.length] = ids[w.start:w.start + w.length]
    got = ids[w.start + 1:w.start + 1 + w.length]  # short by one if extra
    targets[r, :len(got)] = got
    last[r] = max(0, w.length - 1)
  chosen, top_ids, top_lp, at_last = jax.device_get(_score_batch(
      params, model, jnp.asarray(inputs), jnp.asarray(targets),
      jnp.asarray(last), max(top, 1)))
  out = [Scored(np.full(len(t), np.nan, np.float32),
                np.full((len(t), top), -1, np.int32),
                np.full((len(t), top), np.nan, np.float32),
                at_last[max(r for r, w in enumerate(rows) if w.text == i)]
                if following else None) for i, t in enumerate(texts)]
  for r, w in enumerate(rows):
    # Window positions whose targets are new (less the next token's).
    length = max(w.first, w.length - extra(len(texts[w.text])))
    new = slice(w.first, length)
    at = slice(w.start + 1 + w.first, w.start + 1 + length)
    out[w.text].logprobs[at] = chosen[r, new]
    out[w.text].top_ids[at] = top_ids[r, new, :top]
    out[w.text].top_logprobs[at] = top_lp[r, new, :top]
  return out


def loglikelihoods(params, model: nn.Module,
                   pairs: Sequence[tuple[Sequence[int], Sequence[int]]]
                   ) -> list[tuple[float, bool]]:
  """lm-eval's loglikelihood of each (context, continuation) pair of id
  lists: the continuation's summed log-probability after the context, and
  whether each of its tokens is the model's likeliest (greedy)."""
  texts = []
  for i, (context, continuation) in enumerate(pairs):
    if not context or not continuation:
      raise UserError(f"pair {i}: the context and the continuation need at "
                      "least one token each (the first token of a text is "
                      "not scored)")
    texts.append(list(context) + list(continuation))
  out = []
  for (context, _), text, s in zip(pairs, texts,
                                   score(params, model, texts, top=1)):
    n = len(context)
    out.append((float(np.sum(s.logprobs[n:], dtype=np.float64)),
                bool(np.all(s.top_ids[n:, 0] == np.asarray(text[n:])))))
  return out
