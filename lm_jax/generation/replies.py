"""Replies from an encoder-decoder model: greedy or sampled, cached.

The prompt is encoded once (`Seq2SeqModel.encode`); the decoder then
starts from BOS and feeds each chosen token back through `extend`, one
step of a `lax.scan`, until every row has written EOS or the model's
`max_target_len` tokens. Tokens are picked as the language models' are
(`lm_jax.generation.sampling.sample_logits`: temperature 0 is greedy), never PAD
or BOS. Beam search is `lm_jax.generation.beam`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data import pairs
from lm_jax.data.tokenizers import (BOS_ID, encode_prompt, EOS_ID, PAD_ID,
    Tokenizer)
from lm_jax.errors import UserError
from lm_jax.generation import sampling


@functools.partial(jax.jit, static_argnames=("model", "options"))
def generate(params, model: nn.Module, src: jax.Array, key: jax.Array,
             options: sampling.SamplingOptions) -> jax.Array:
  """Reply ids (B, N) for sources src (B, S), N = min(max_new_tokens,
  max_target_len) + 1: the reply, EOS, then PAD."""
  apply = lambda method, *args: model.apply({"params": params}, *args,
                                            method=method)
  B = src.shape[0]
  state = model.initial_state(apply(model.encode, src))
  bos = jnp.full((B, 1), BOS_ID, jnp.int32)

  def step(carry, key):
    token, state, done = carry  # (B, 1), ..., (B,)
    logits, state = apply(model.extend, token, state)
    # PAD and BOS are never targets: a reply does not contain them.
    logits = logits[:, -1].at[:, jnp.array([PAD_ID, BOS_ID])].set(-jnp.inf)
    new = sampling.sample_logits(key, logits, options.temperature,
                                 options.top_k, options.top_p)
    new = jnp.where(done, PAD_ID, new.astype(jnp.int32))  # (B,)
    return (new[:, None], state, done | (new == EOS_ID)), new

  n = min(options.max_new_tokens, model.max_target_len) + 1
  _, ids = jax.lax.scan(step, (bos, state, jnp.zeros(B, bool)),
                        jax.random.split(key, n))
  return ids.T  # (B, N)


def encode_prompts(tokenizer: Tokenizer, prompts: list[str],
                   max_source_len: int) -> np.ndarray:
  """src (B, S) of user prompts; an empty, unknown or too long one is a
  UserError naming it."""
  rows = []
  for prompt in prompts:
    if not prompt.strip():
      raise UserError("the prompt is empty: give a phrase to answer")
    ids, notice = encode_prompt(tokenizer, prompt)
    if notice:
      raise UserError(f"{notice}; rephrase without them")
    if len(ids) > max_source_len:
      raise UserError(
          f"the prompt has {len(ids)} tokens, more than the encoder takes "
          f"(config.model.max_source_len={max_source_len}); shorten it")
    rows.append(np.pad(ids, (0, max_source_len - len(ids)),
                       constant_values=PAD_ID))
  return np.stack(rows).astype(np.int32)


def reply_texts(tokenizer: Tokenizer, ids: np.ndarray) -> list[str]:
  """Each row's reply (the ids before EOS), decoded."""
  return [tokenizer.decode(pairs.reply_ids(row)) for row in np.asarray(ids)]


def reply(params, model: nn.Module, tokenizer: Tokenizer, prompts: list[str],
          key: jax.Array, options: sampling.SamplingOptions) -> list[str]:
  """The model's reply to each prompt, as text."""
  src = encode_prompts(tokenizer, prompts, model.max_source_len)
  return reply_texts(tokenizer, generate(params, model, jnp.asarray(src), key,
                                         options))
