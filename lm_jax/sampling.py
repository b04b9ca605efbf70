"""Generation: pure functions of (params, prompt tokens, key, options).

`sample_logits` turns next-token logits into a token (greedy, temperature,
top-k, top-p); `generate` extends a prompt one token at a time.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How to pick each next token. temperature 0 means greedy (argmax)."""
  max_new_tokens: int = 200
  temperature: float = 1.0
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1: no nucleus filter

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise UserError(f"--max_new_tokens must be positive, got "
                      f"{self.max_new_tokens}")
    if self.temperature < 0:
      raise UserError(f"--temperature must be >= 0 (0 is greedy), got "
                      f"{self.temperature}")
    if self.top_k < 0:
      raise UserError(f"--top_k must be >= 0 (0 turns it off), got "
                      f"{self.top_k}")
    if not 0 < self.top_p <= 1:
      raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")


def sample_logits(key: jax.Array, logits: jax.Array,
                  options: SamplingOptions) -> jax.Array:
  """Next tokens (B,) from logits (B, V) under `options`."""
  if options.temperature == 0:
    return jnp.argmax(logits, axis=-1)
  logits = logits.astype(jnp.float32) / options.temperature
  if 0 < options.top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, options.top_k)[0][:, -1:]  # (B, 1)
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if options.top_p < 1:
    # Keep the fewest most likely tokens whose probabilities sum to >= top_p.
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # A token stays if the mass before it is still below top_p.
    keep = (cum - jax.nn.softmax(sorted_logits, axis=-1)) < options.top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1,
                     keepdims=True)  # (B, 1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "options"))
def generate(params, model: nn.Module, prompt: jax.Array, key: jax.Array,
             options: SamplingOptions) -> jax.Array:
  """Continues each row of `prompt` (B, P) by `options.max_new_tokens`.

  Returns the new tokens (B, N). For a model with positions (`max_len`),
  every step re-runs it over the last `max_len` tokens (a sliding window), so
  the context never exceeds the positions the model learned; a model without
  carries its state (`_generate_stateful`).
  """
  if not hasattr(model, "max_len"):
    return _generate_stateful(params, model, prompt, key, options)
  B, P = prompt.shape
  N = options.max_new_tokens
  W = min(model.max_len, P + N)  # window length, static
  seq = jnp.concatenate([prompt, jnp.zeros((B, N), prompt.dtype)], axis=1)

  def body(i, carry):
    seq, key = carry
    pos = P + i  # index of the token to produce
    start = jnp.clip(pos - W, 0, P + N - W)
    window = jax.lax.dynamic_slice_in_dim(seq, start, W, axis=1)  # (B, W)
    logits = model.apply({"params": params}, window)  # (B, W, V)
    last = jax.lax.dynamic_index_in_dim(logits, pos - 1 - start, axis=1,
                                        keepdims=False)  # (B, V)
    key, sub = jax.random.split(key)
    token = sample_logits(sub, last, options).astype(seq.dtype)
    seq = jax.lax.dynamic_update_slice_in_dim(seq, token[:, None], pos, axis=1)
    return seq, key

  seq, _ = jax.lax.fori_loop(0, N, body, (seq, key))
  return seq[:, P:]


def _generate_stateful(params, model: nn.Module, prompt: jax.Array,
                       key: jax.Array, options: SamplingOptions) -> jax.Array:
  """`generate` for a model with a carried state (`initial_state`, `extend`):
  the prompt is read once, then each new token costs one step."""
  extend = functools.partial(model.apply, {"params": params},
                             method=model.extend)
  logits, state = extend(prompt, model.initial_state(prompt.shape[0]))

  def body(carry, _):
    last, state, key = carry  # last: logits (B, V) for the next token
    key, sub = jax.random.split(key)
    token = sample_logits(sub, last, options).astype(prompt.dtype)  # (B,)
    logits, state = extend(token[:, None], state)
    return (logits[:, -1], state, key), token

  _, tokens = jax.lax.scan(body, (logits[:, -1], state, key),
                           length=options.max_new_tokens)
  return tokens.T  # (B, N)
