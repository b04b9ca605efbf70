"""Generation: pure functions of (params, model, prompt tokens, key, options).

Works with any model through its decoding interface
(`lm_jax.models.base.LanguageModel`): `initial_state(batch_size)`,
`extend(tokens, state) -> (logits, state)` and `context_length`.
The prompt is prefilled in one call, then a jitted loop (`lax.scan`) feeds
one token per step: sample from the last logits, extend by that token.

Past the context. A model with a `context_length` W (the Transformer: W
learned positions and a cache of W keys and values) sees at most W tokens:
  1. a prompt longer than W is cut to its last W tokens;
  2. when the cache is full and the token just sampled must be fed, the
     window slides: the last W // 2 tokens (that token included) are
     prefilled again from an empty cache, at positions 0 .. W // 2 - 1, and
     decoding goes on one token per step.
So every token is predicted from the last W // 2 to W tokens before it, and a
re-prefill of W // 2 tokens happens once every W // 2 + 1 new tokens. A model
whose context_length is None (the LSTM) carries its state forward with no
limit.
`generate_uncached` follows the same rule by recomputing the whole window at
every step; it is the reference for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How to pick each next token. temperature 0 means greedy (argmax)."""
  max_new_tokens: int = 200
  temperature: float = 1.0
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1: no nucleus filter

  def __post_init__(self):
    for field in dataclasses.fields(self):
      problem = option_problem(field.name, getattr(self, field.name))
      if problem:
        raise UserError(f"--{field.name} {problem}")


def option_problem(field: str, value) -> str | None:
  """What is wrong with `value` for SamplingOptions.`field`, or None.

  Without the option's name: a flag says `--temperature`, the interactive
  loop `/temp`. NaN fails every comparison, so it is named first.
  """
  if isinstance(value, float) and not math.isfinite(value):
    return f"must be a finite number, got {value}"
  if field == "max_new_tokens" and value <= 0:
    return f"must be positive, got {value}"
  if field == "temperature" and value < 0:
    return f"must be >= 0 (0 is greedy), got {value}"
  if field == "top_k" and value < 0:
    return f"must be >= 0 (0 turns it off), got {value}"
  if field == "top_p" and not 0 < value <= 1:
    return f"must be in (0, 1], got {value}"
  return None


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
    # Keep the fewest most likely tokens whose probabilities sum to >= top_p:
    # a token stays if the mass of the likelier ones is still below top_p.
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # (B, V) descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    keep = jnp.cumsum(probs, axis=-1) - probs < options.top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1,
                     keepdims=True)  # (B, 1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1)


class Decoding(NamedTuple):
  """The loop's carry: everything needed to produce the next token."""
  state: Any  # the model's decoding state (cache or recurrent carries)
  logits: jax.Array  # (B, V) for the next token
  key: jax.Array
  context: jax.Array | None  # (B, W) tokens the cache holds; None: no limit
  length: jax.Array  # int32, valid tokens in `context`


def keep_on_slide(window: int) -> int:
  """Tokens kept when the window slides (see the module docstring)."""
  return max(1, window // 2)


def _extend(params, model: nn.Module, tokens, state):
  return model.apply({"params": params}, tokens, state, method=model.extend)


def _start(params, model: nn.Module, prompt: jax.Array,
           key: jax.Array) -> Decoding:
  """Prefills the prompt (B, P) (its last W tokens) in one call."""
  B, P = prompt.shape
  if P == 0:
    raise UserError("the prompt is empty: give at least one token")
  W = model.context_length
  if W is not None:
    prompt = prompt[:, -W:]
  logits, state = _extend(params, model, prompt, model.initial_state(B))
  context = None
  if W is not None:
    context = jnp.zeros((B, W), jnp.int32).at[:, :prompt.shape[1]].set(prompt)
  return Decoding(state, logits[:, -1], key, context,
                  jnp.int32(prompt.shape[1]))


def _feed(params, model: nn.Module, d: Decoding, token: jax.Array) -> Decoding:
  """Extends by the sampled tokens (B,), sliding the window when it is full."""
  W = model.context_length
  if W is None:
    logits, state = _extend(params, model, token[:, None], d.state)
    return d._replace(state=state, logits=logits[:, 0], length=d.length + 1)

  def append(d):
    logits, state = _extend(params, model, token[:, None], d.state)
    context = jax.lax.dynamic_update_slice_in_dim(d.context, token[:, None],
                                                  d.length, axis=1)
    return d._replace(state=state, logits=logits[:, 0], context=context,
                      length=d.length + 1)

  def slide(d):
    keep = keep_on_slide(W)
    recent = jnp.concatenate([d.context[:, W - keep + 1:], token[:, None]],
                             axis=1)  # (B, keep)
    fresh = model.initial_state(token.shape[0])
    logits, state = _extend(params, model, recent, fresh)
    context = jnp.zeros_like(d.context).at[:, :keep].set(recent)
    return d._replace(state=state, logits=logits[:, -1], context=context,
                      length=jnp.int32(keep))

  return jax.lax.cond(d.length < W, append, slide, d)


def _decode(params, model: nn.Module, d: Decoding,
            options: SamplingOptions) -> tuple[Decoding, jax.Array]:
  """`options.max_new_tokens` steps; returns the carry and tokens (B, N)."""

  def step(d, _):
    key, sub = jax.random.split(d.key)
    token = sample_logits(sub, d.logits, options).astype(jnp.int32)
    return _feed(params, model, d._replace(key=key), token), token

  d, tokens = jax.lax.scan(step, d, None, length=options.max_new_tokens)
  return d, tokens.T


_start_jit = jax.jit(_start, static_argnames=("model",))
_decode_jit = jax.jit(_decode, static_argnames=("model", "options"),
                      donate_argnames=("d",))


@functools.partial(jax.jit, static_argnames=("model", "options"))
def generate(params, model: nn.Module, prompt: jax.Array, key: jax.Array,
             options: SamplingOptions) -> jax.Array:
  """Continues each row of `prompt` (B, P) int by `options.max_new_tokens`.

  Returns the new tokens (B, N). Rows are independent samples; the same key
  gives the same tokens.
  """
  return _decode(params, model, _start(params, model, prompt, key), options)[1]


def stream(params, model: nn.Module, prompt: jax.Array, key: jax.Array,
           options: SamplingOptions,
           chunk_tokens: int = 16) -> Iterator[np.ndarray]:
  """The tokens of `generate`, yielded as they are made: (B, <= chunk_tokens).

  Each chunk is one jitted call of `chunk_tokens` steps (the last one may be
  shorter), so the compiled loop does not depend on max_new_tokens.
  """
  d = _start_jit(params, model, jnp.asarray(prompt, jnp.int32), key)
  left = options.max_new_tokens
  while left > 0:
    n = min(chunk_tokens, left)
    d, tokens = _decode_jit(params, model, d,
                            dataclasses.replace(options, max_new_tokens=n))
    left -= n
    yield np.asarray(tokens)


@functools.partial(jax.jit, static_argnames=("model", "options"))
def generate_uncached(params, model: nn.Module, prompt: jax.Array,
                      key: jax.Array, options: SamplingOptions) -> jax.Array:
  """`generate` without a cache: the whole window is recomputed every step.

  Same context rule and same random draws as `generate`, so greedy decoding
  gives the same tokens; the reference for tests and benchmarks (needs a
  `context_length`).
  """
  B, P = prompt.shape
  W = model.context_length
  score = lambda context: model.apply({"params": params}, context)  # (B,W,V)
  prompt = prompt[:, -W:]
  context = jnp.zeros((B, W), jnp.int32).at[:, :prompt.shape[1]].set(prompt)
  length = jnp.int32(prompt.shape[1])

  def step(carry, _):
    context, length, key = carry
    logits = jax.lax.dynamic_index_in_dim(score(context), length - 1, axis=1,
                                          keepdims=False)  # (B, V)
    key, sub = jax.random.split(key)
    token = sample_logits(sub, logits, options).astype(jnp.int32)
    keep = keep_on_slide(W)
    slid = jnp.zeros_like(context).at[:, :keep].set(jnp.concatenate(
        [context[:, W - keep + 1:], token[:, None]], axis=1))
    appended = jax.lax.dynamic_update_slice_in_dim(
        context, token[:, None], jnp.minimum(length, W - 1), axis=1)
    full = length == W
    context = jnp.where(full, slid, appended)
    length = jnp.where(full, keep, length + 1)
    return (context, length, key), token

  _, tokens = jax.lax.scan(step, (context, length, key), None,
                           length=options.max_new_tokens)
  return tokens.T


# Tokens decoded again before each new piece: a token's spelling may depend
# on those before it (the word tokenizer's spacing, a byte-level tokenizer's
# multi-byte characters).
_CONTEXT = 8


class _Text:
  """One sample's text, grown piece by piece: each token is decoded a
  bounded number of times, so a long sample costs linear time.

  A piece is decoded after the last `_CONTEXT` tokens and their own text is
  cut off. A piece ending in U+FFFD may be a character whose bytes are not
  all out yet: it waits for the next one (`final` flushes it).
  """

  def __init__(self, tokenizer, prompt: np.ndarray, stop: str,
               streamed: bool = False):
    self.decode, self.stop, self.streamed = tokenizer.decode, stop, streamed
    self.context = [int(t) for t in prompt[-_CONTEXT:]]
    self.pending: list[int] = []
    self.parts: list[str] = []
    self.length = 0  # characters in `parts`
    self.cut: int | None = None  # where `stop` begins, once found
    self.tail = ""  # the last len(stop) - 1 characters
    self.unsent = ""  # if streamed: the end of the text not yet streamed

  def add(self, tokens: np.ndarray, final: bool = False) -> None:
    if self.cut is not None:
      return
    self.pending += np.asarray(tokens).tolist()
    context = self.context
    text = self.decode(context + self.pending)[len(self.decode(context)):]
    if text.endswith("\ufffd") and not final:
      return
    self.context = (context + self.pending)[-_CONTEXT:]
    self.pending = []
    if self.stop:  # `stop` may begin in the end of the last piece
      joined = self.tail + text
      at = joined.find(self.stop)
      if at >= 0:
        self.cut = self.length - len(self.tail) + at
      self.tail = joined[max(0, len(joined) - len(self.stop) + 1):]
    self.parts.append(text)
    self.length += len(text)
    if self.streamed:
      self.unsent += text
    if self.cut is not None:
      self.unsent = self.unsent[:len(self.unsent) - (self.length - self.cut)]

  def ready(self) -> str:
    """Text to stream now: all but what could still begin `stop`."""
    hold = 0 if self.cut is not None or not self.stop else len(self.stop) - 1
    out = self.unsent[:max(0, len(self.unsent) - hold)]
    self.unsent = self.unsent[len(out):]
    return out

  def text(self) -> str:
    return "".join(self.parts)[:self.cut]


def generate_text(params, model: nn.Module, tokenizer, prompt: np.ndarray,
                  key: jax.Array, options: SamplingOptions, *,
                  num_samples: int = 1, stop: str = "",
                  on_text: Callable[[str], None] | None = None,
                  chunk_tokens: int = 16) -> list[str]:
  """`num_samples` continuations (text) of `prompt` (P,) ids, cut at `stop`.

  Generation ends after `options.max_new_tokens` tokens or once every sample
  contains `stop`, which is left out. `on_text` receives the first sample's
  new text as it is produced (for streaming to a terminal); text that could
  be the start of `stop` is held back until it is known not to be. Get the
  ids with `tokenizers.encode_prompt`.
  """
  if num_samples <= 0:
    raise UserError(f"--num_samples must be positive, got {num_samples}")
  prompt = np.asarray(prompt)
  batch = np.tile(prompt, (num_samples, 1))
  streamed = on_text is not None
  texts = [_Text(tokenizer, prompt, stop, streamed=streamed and i == 0)
           for i in range(num_samples)]
  for chunk in stream(params, model, batch, key, options, chunk_tokens):
    for text, row in zip(texts, chunk):
      text.add(row)
    if streamed:
      on_text(texts[0].ready())
    if all(t.cut is not None for t in texts):
      break
  for text in texts:
    text.add(np.zeros(0, np.int32), final=True)
  if streamed and texts[0].unsent:
    on_text(texts[0].unsent)
  return [t.text() for t in texts]
