"""Generation: pure functions of (params, model, prompt tokens, key, options).

Works with any model through its decoding interface
(`lm_jax.models.base.LanguageModel`): `initial_state(batch_size)`,
`extend(tokens, state) -> (logits, state)` and `context_length`.
The prompt is prefilled in one call, then a jitted loop (`lax.scan`) feeds
one token per step: sample from the last logits, extend by that token.
Each step is a function of its own (`next_token`, then `feed`: `append`,
or `slide` a full window), so that the server's engine
(lm_jax/serve/engine.py) runs the same ones on its slots, one row each.

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
from lm_jax.generation import detokenize

Tokens = jax.Array | np.ndarray  # (B, P) ids, on device or on the host


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How to pick each next token. temperature 0 means greedy (argmax)."""
  max_new_tokens: int = 200
  temperature: float = 1.0
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1: no nucleus filter
  # OpenAI's penalties (the server's requests; lm-jax-sample leaves them
  # off): subtracted from the logit of each token already generated, once
  # (presence) or once per time (frequency); and (id, bias) pairs added to
  # the logits of those ids.
  presence_penalty: float = 0.0
  frequency_penalty: float = 0.0
  logit_bias: tuple[tuple[int, float], ...] = ()

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
  if field in ("presence_penalty", "frequency_penalty") and not (
      -2 <= value <= 2):
    return f"must be in [-2, 2], got {value}"
  if field == "logit_bias":
    for _, bias in value:
      if not (isinstance(bias, (int, float)) and -100 <= bias <= 100):
        return f"values must be in [-100, 100], got {bias}"
  return None


class Penalties(NamedTuple):
  """What each row's options change in its logits before sampling (OpenAI's
  `logit_bias`, `presence_penalty`, `frequency_penalty`), and the counts of
  the tokens it has generated, which the penalties read."""
  bias: jax.Array  # (B, V) added to the logits
  counts: jax.Array  # (B, V) int32: times each token was generated
  presence: jax.Array  # (B,) off a generated token's logit, once
  frequency: jax.Array  # (B,) off a generated token's logit, per time


def penalties_of(options: SamplingOptions | None, B: int,
                 V: int) -> Penalties:
  """The penalties of `options` (None: none) for B rows, counts at 0."""
  o = options or SamplingOptions()
  bias = np.zeros((B, V), np.float32)
  for i, b in o.logit_bias:
    bias[:, i] = b
  return Penalties(jnp.asarray(bias), jnp.zeros((B, V), jnp.int32),
                   jnp.full((B,), o.presence_penalty, jnp.float32),
                   jnp.full((B,), o.frequency_penalty, jnp.float32))


def penalized(logits: jax.Array, p: Penalties) -> jax.Array:
  """logits (B, V) + bias - frequency x count - presence x (count > 0), as
  OpenAI's API reference writes it."""
  counts = p.counts.astype(jnp.float32)
  return (logits.astype(jnp.float32) + p.bias
          - p.frequency[:, None] * counts
          - p.presence[:, None] * (counts > 0))


def sample_logits(key: jax.Array, logits: jax.Array, temperature,
                  top_k=0, top_p=1.0,
                  penalties: Penalties | None = None) -> jax.Array:
  """Next tokens (B,) from logits (B, V), drawn with one key.

  temperature (0: greedy), top_k (0: off) and top_p (1: off) are numbers or
  arrays of one per row (B,), traced or not: the server's rows, each with
  its own options, share one compiled step. The filters' sorts are left
  out of the program when the options are numbers that ask for none.
  `penalties` change the logits first (`penalized`), greedy included.
  """
  B, V = logits.shape
  if penalties is not None:
    logits = penalized(logits, penalties)
  per_row = lambda x, kind: jnp.broadcast_to(jnp.asarray(x, kind),
                                            (B,))[:, None]
  temperature = per_row(temperature, jnp.float32)  # (B, 1)
  x = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1)
  if _filtering(top_k, top_p, V):
    x = _filter(x, per_row(top_k, jnp.int32), per_row(top_p, jnp.float32))
  sampled = jax.random.categorical(key, x, axis=-1)
  return jnp.where(temperature[:, 0] > 0, sampled, jnp.argmax(logits, -1))


def _filtering(top_k, top_p, V: int) -> bool:
  """Whether a filter may apply: jax arrays (one option per row, perhaps
  traced) may; numbers when they ask for one."""
  if any(isinstance(o, jax.Array) for o in (top_k, top_p)):
    return True
  k = np.asarray(top_k)
  return bool(np.any((0 < k) & (k < V)) or np.any(np.asarray(top_p) < 1))


def _filter(x: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """x (B, V) with each row's tokens outside its top_k and its nucleus (the
  fewest likeliest whose probabilities sum to >= top_p) set to -inf."""
  V = x.shape[-1]
  ordered = jnp.sort(x, axis=-1)[:, ::-1]  # (B, V) descending
  kth = jnp.take_along_axis(ordered, jnp.clip(top_k - 1, 0, V - 1), axis=-1)
  x = jnp.where((top_k > 0) & (top_k < V) & (x < kth), -jnp.inf, x)
  # A token stays if the mass of the likelier ones is still below top_p.
  ordered = jnp.sort(x, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(ordered, axis=-1)
  keep = jnp.cumsum(probs, axis=-1) - probs < top_p
  cutoff = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1,
                   keepdims=True)  # (B, 1)
  return jnp.where((top_p < 1) & (x < cutoff), -jnp.inf, x)


class Decoding(NamedTuple):
  """The loop's carry: everything needed to produce the next token of B
  rows that share a cache length (the server's slots: one row each)."""
  state: Any  # the model's decoding state (cache or recurrent carries)
  logits: jax.Array  # (B, V) for the next token
  key: jax.Array
  context: jax.Array | None  # (B, W) tokens the cache holds; None: no limit
  length: jax.Array  # int32, valid tokens in `context`
  penalties: Penalties  # the options' penalties and the tokens' counts


def keep_on_slide(window: int) -> int:
  """Tokens kept when the window slides (see the module docstring)."""
  return max(1, window // 2)


def extend(params, model: nn.Module, tokens: jax.Array, state):
  """The model's logits (B, T, V) for tokens (B, T) after the text `state`
  holds, and the state after them: the one cached step of every decoder."""
  return model.apply({"params": params}, tokens, state, method=model.extend)


def begin(model: nn.Module, prompt: Tokens, logits: jax.Array, state,
          key: jax.Array, penalties: Penalties | None = None) -> Decoding:
  """The carry once `prompt` (B, P), P <= W, is in `state`, with the
  logits (B, V) after its last token (`penalties` None: none)."""
  B, P = prompt.shape
  context = None
  if model.context_length is not None:
    context = jnp.zeros((B, model.context_length), jnp.int32).at[:, :P].set(
        prompt)
  if penalties is None:
    penalties = penalties_of(None, B, logits.shape[-1])
  return Decoding(state, logits, key, context, jnp.int32(P), penalties)


def start(params, model: nn.Module, prompt: jax.Array, key: jax.Array,
          penalties: Penalties | None = None) -> Decoding:
  """Prefills the prompt (B, P) (its last W tokens) in one call; the
  `penalties` (`penalties_of` the options; None: none) apply from the
  first token."""
  B, P = prompt.shape
  if P == 0:
    raise UserError("the prompt is empty: give at least one token")
  if model.context_length is not None:
    prompt = prompt[:, -model.context_length:]
  logits, state = extend(params, model, prompt, model.initial_state(B))
  return begin(model, prompt, logits[:, -1], state, key, penalties)


def next_token(d: Decoding, temperature, top_k, top_p
               ) -> tuple[Decoding, jax.Array]:
  """Splits the key and samples the next tokens (B,) from `d.logits`, as
  the penalties change them; counts the tokens for the penalties."""
  key, sub = jax.random.split(d.key)
  token = sample_logits(sub, d.logits, temperature, top_k, top_p,
                        d.penalties).astype(jnp.int32)
  p = d.penalties
  counts = p.counts.at[jnp.arange(token.shape[0]), token].add(1)
  return d._replace(key=key, penalties=p._replace(counts=counts)), token


def append(params, model: nn.Module, d: Decoding,
           token: jax.Array) -> Decoding:
  """Extends by tokens (B,) into a window with room. Past a full one the
  context is left as it was, for `slide`, and the state is spoilt."""
  logits, state = extend(params, model, token[:, None], d.state)
  context = d.context
  if context is not None:
    context = context.at[:, d.length].set(token, mode="drop")
  return d._replace(state=state, logits=logits[:, 0], context=context,
                    length=d.length + 1)


def slide(params, model: nn.Module, d: Decoding,
          token: jax.Array) -> Decoding:
  """Feeds tokens (B,) to a full window: the last W // 2 tokens, `token`
  included, prefilled again from an empty cache."""
  W = model.context_length
  keep = keep_on_slide(W)
  assert d.context is not None  # only a model with a window slides
  recent = jnp.concatenate([d.context[:, W - keep + 1:], token[:, None]],
                           axis=1)  # (B, keep)
  logits, state = extend(params, model, recent,
                         model.initial_state(token.shape[0]))
  return begin(model, recent, logits[:, -1], state, d.key, d.penalties)


def full(model: nn.Module, d: Decoding) -> jax.Array:
  """Whether the next token must `slide` rather than `append`."""
  if model.context_length is None:
    return jnp.zeros_like(d.length, bool)
  return d.length >= model.context_length


def feed(params, model: nn.Module, d: Decoding, token: jax.Array) -> Decoding:
  """Extends by the sampled tokens (B,), sliding the window when it is full."""
  if model.context_length is None:
    return append(params, model, d, token)
  return jax.lax.cond(full(model, d),
                      lambda d: slide(params, model, d, token),
                      lambda d: append(params, model, d, token), d)


def _decode(params, model: nn.Module, d: Decoding,
            options: SamplingOptions) -> tuple[Decoding, jax.Array]:
  """`options.max_new_tokens` steps; returns the carry and tokens (B, N)."""

  def step(d, _):
    d, token = next_token(d, options.temperature, options.top_k,
                          options.top_p)
    return feed(params, model, d, token), token

  d, tokens = jax.lax.scan(step, d, None, length=options.max_new_tokens)
  return d, tokens.T


_start_jit = jax.jit(start, static_argnames=("model",))
_decode_jit = jax.jit(_decode, static_argnames=("model", "options"),
                      donate_argnames=("d",))


@functools.partial(jax.jit, static_argnames=("model", "options"))
def generate(params, model: nn.Module, prompt: jax.Array, key: jax.Array,
             options: SamplingOptions) -> jax.Array:
  """Continues each row of `prompt` (B, P) int by `options.max_new_tokens`.

  Returns the new tokens (B, N). Rows are independent samples; the same key
  gives the same tokens.
  """
  d = start(params, model, prompt, key,
            penalties_of(options, prompt.shape[0], model.vocab_size))
  return _decode(params, model, d, options)[1]


def stream(params, model: nn.Module, prompt: Tokens, key: jax.Array,
           options: SamplingOptions,
           chunk_tokens: int = 16) -> Iterator[np.ndarray]:
  """The tokens of `generate`, yielded as they are made: (B, <= chunk_tokens).

  Each chunk is one jitted call of `chunk_tokens` steps (the last one may be
  shorter), so the compiled loop does not depend on max_new_tokens.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  d = _start_jit(params, model, prompt, key,
                 penalties_of(options, prompt.shape[0], model.vocab_size))
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
    token = sample_logits(sub, logits, options.temperature, options.top_k,
                          options.top_p).astype(jnp.int32)
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


def generate_text(params, model: nn.Module, tokenizer, prompt: np.ndarray,
                  key: jax.Array, options: SamplingOptions, *,
                  num_samples: int = 1, stop: str = "",
                  on_text: Callable[[str], None] | None = None,
                  chunk_tokens: int = 16) -> list[str]:
  """`num_samples` continuations (text) of `prompt` (P,) ids, cut at `stop`.

  Generation ends after `options.max_new_tokens` tokens or once every sample
  contains `stop`, which is left out. `on_text` receives the first sample's
  new text as it is produced (for streaming to a terminal): whole
  characters, and none that could be the start of `stop` until it is known
  not to be (`detokenize.Detokenizer`). Get the ids with
  `tokenizers.encode_prompt`.
  """
  if num_samples <= 0:
    raise UserError(f"--num_samples must be positive, got {num_samples}")
  prompt = np.asarray(prompt)
  batch = np.tile(prompt, (num_samples, 1))
  texts = [detokenize.Detokenizer(tokenizer, prompt, (stop,))
           for _ in range(num_samples)]
  parts: list[list[str]] = [[] for _ in range(num_samples)]

  def take(i: int, pieces: list[detokenize.Piece]) -> None:
    parts[i] += [p.text for p in pieces]
    if on_text is not None and i == 0:
      on_text("".join(p.text for p in pieces))

  for chunk in stream(params, model, batch, key, options, chunk_tokens):
    for i, (text, row) in enumerate(zip(texts, chunk)):
      take(i, text.add(row))
    if all(t.stopped for t in texts):
      break
  for i, text in enumerate(texts):
    rest = text.finish()
    if rest:
      take(i, rest)
  return ["".join(p) for p in parts]
