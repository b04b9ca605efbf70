"""Filling blanks and generating by unmasking, for a masked LM.

A masked LM scores every hidden position at once from the text on both
sides, but its guesses at two hidden positions are independent: asked for
"t_ _" in one go, it may answer "the" at one blank and "oo" at the next.
So the hidden positions are revealed over `num_steps` steps: at each, the
model scores the canvas, a token is drawn at every hidden position, and
the most confident of them (the highest probability of the token drawn:
Ghazvininejad et al. 2019, MaskGIT) or a random few (as masked diffusion
samples: each hidden token is equally likely to be revealed next) are
written in; the rest stay hidden and are scored again, seeing the new
ones. After the last step no position is hidden. One step per blank,
confidence order, is filling "most confident first"; one step is "all at
once". Generating text is the same after a prompt: N `<mask>` appended.

`unmask_loop` takes any logits function (tests give it a fake one);
`unmask` is it jitted for a model's parameters.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.generation import sampling
from lm_jax.special_tokens import MASK_ID, MASKED_SPECIALS

ORDERS = ("confidence", "random")
# Ids below it (<unk>, <pad>, <bos>, <eos>, <mask>) are never written.
FIRST_TEXT_ID = len(MASKED_SPECIALS)


class Unmasked(NamedTuple):
  """What `unmask_loop` returns."""
  tokens: jax.Array  # (T,) no MASK_ID left
  canvases: jax.Array  # (S, T) the canvas after each step
  top_ids: jax.Array  # (T, k) each hidden position's likeliest tokens...
  top_probs: jax.Array  # (T, k) ...and their probabilities, when revealed
  probs: jax.Array  # (T,) the probability of the token written; 0: given
  revealed_at: jax.Array  # (T,) the step that wrote it; -1: never hidden


def reveal_counts(num_hidden: jax.Array, num_steps: int) -> jax.Array:
  """How many positions each of `num_steps` steps reveals: (S,), summing
  to `num_hidden`, as even as whole numbers allow."""
  done = (num_hidden * jnp.arange(num_steps + 1)) // num_steps
  return jnp.diff(done)


def unmask_loop(logits_fn: Callable, tokens: jax.Array, key: jax.Array,
                num_steps: int, order: str = "confidence",
                options: sampling.SamplingOptions = sampling.SamplingOptions(
                    temperature=0.0), top: int = 5) -> Unmasked:
  """Reveals every MASK_ID of tokens (T,) in `num_steps` steps.

  `logits_fn` maps tokens (1, T) to logits (1, T, V). At each step a token
  is drawn at every hidden position under `options` (temperature 0:
  argmax) and `reveal_counts` of them are written: the likeliest (`order`
  "confidence", by the probability of the token drawn) or random ones.
  """
  hidden0 = tokens == MASK_ID  # (T,)
  counts = reveal_counts(hidden0.sum(), num_steps)  # (S,)
  T = tokens.shape[0]

  def step(carry, inputs):
    canvas, top_ids, top_probs, written, revealed_at = carry
    s, count = inputs
    k_draw, k_order = jax.random.split(jax.random.fold_in(key, s))
    logits = logits_fn(canvas[None])[0].astype(jnp.float32)  # (T, V)
    logits = logits.at[:, :FIRST_TEXT_ID].set(-jnp.inf)
    drawn = sampling.sample_logits(k_draw, logits, options.temperature,
                                   options.top_k, options.top_p)  # (T,)
    probs = jax.nn.softmax(logits, axis=-1)  # (T, V)
    confidence = jnp.take_along_axis(probs, drawn[:, None], -1)[:, 0]
    score = (confidence if order == "confidence"
             else jax.random.uniform(k_order, (T,)))
    hidden = canvas == MASK_ID
    score = jnp.where(hidden, score, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-score))  # 0: the first to reveal
    reveal = hidden & (rank < count)  # (T,)
    p, ids = jax.lax.top_k(probs, top)  # (T, k)
    canvas = jnp.where(reveal, drawn, canvas)
    top_ids = jnp.where(reveal[:, None], ids, top_ids)
    top_probs = jnp.where(reveal[:, None], p, top_probs)
    written = jnp.where(reveal, confidence, written)
    revealed_at = jnp.where(reveal, s, revealed_at)
    return (canvas, top_ids, top_probs, written, revealed_at), canvas

  init = (tokens, jnp.zeros((T, top), jnp.int32),
          jnp.zeros((T, top), jnp.float32), jnp.zeros((T,), jnp.float32),
          jnp.full((T,), -1, jnp.int32))
  (canvas, top_ids, top_probs, written, revealed_at), canvases = (
      jax.lax.scan(step, init, (jnp.arange(num_steps), counts)))
  return Unmasked(canvas, canvases, top_ids, top_probs, written, revealed_at)


@functools.partial(jax.jit, static_argnames=(
    "model", "num_steps", "order", "options", "top"))
def unmask(params, model: nn.Module, tokens: jax.Array, key: jax.Array,
           num_steps: int, order: str = "confidence",
           options: sampling.SamplingOptions = sampling.SamplingOptions(
               temperature=0.0), top: int = 5) -> Unmasked:
  """`unmask_loop` with a masked LM's logits (lm_jax/models/mlm.py)."""
  logits_fn = lambda x: model.apply({"params": params}, x)
  return unmask_loop(logits_fn, tokens, key, num_steps, order, options, top)
