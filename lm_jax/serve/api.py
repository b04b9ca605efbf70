"""The OpenAI API's shapes: reading a request's JSON body, writing errors,
completions and chunks, and cutting text at stop strings.

Only what a request says goes into `SamplingOptions` and the prompt: no
field names a file or a setting of the server.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import secrets
import time
from typing import Any, NamedTuple

from lm_jax.generation import detokenize, sampling, scoring
from lm_jax.serve.engine import Token

SEED_RANGE = (-2**31, 2**31)  # what jax.random.key takes without x64
MAX_STOPS = 4  # as OpenAI's API
MAX_N = 8  # choices per prompt
MAX_CHOICES = 128  # prompts x n per request
MAX_BIAS = 300  # logit_bias entries, as OpenAI's API

# Fields of OpenAI's API this server cannot honour: a request that sets one
# (to anything but its "off" values, listed) is refused, naming it, rather
# than answered as if it were not there.
UNSUPPORTED = {"tools": (None, []), "functions": (None, []),
               "tool_choice": (None, "none"), "function_call": (None, "none"),
               "suffix": (None, ""), "audio": (None,), "prediction": (None,),
               "modalities": (None, ["text"]),
               "response_format": (None, {"type": "text"})}


class ApiError(Exception):
  """An error answered as an OpenAI error object with this HTTP status."""

  def __init__(self, status: int, message: str, param: str | None = None,
               code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.code = (status, message,
                                                        param, code)


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               404: "invalid_request_error", 405: "invalid_request_error",
               413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 503: "server_error"}


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict:
  return {"error": {"message": message,
                    "type": ERROR_TYPES.get(status, "server_error"),
                    "param": param, "code": code}}


@dataclasses.dataclass
class Params:
  """A completion request, checked: what to generate and how to report it."""
  options: sampling.SamplingOptions
  n: int
  seed: int
  stops: tuple[str, ...]
  stream: bool
  logprobs: int  # alternatives per token to report; -1: no logprobs
  max_tokens: int = 1  # as asked: 0 (echo only) makes no token
  echo: bool = False  # the prompt first, its tokens scored
  include_usage: bool = False  # a stream's last chunk: the usage


def _field(body: dict, name: str, kinds: tuple, default: Any = None,
           what: str = ""):
  """body[name] if of one of `kinds` (None or absent: `default`); else 400."""
  value = body.get(name)
  if value is None:
    return default
  if isinstance(value, bool) and bool not in kinds:
    kinds = ()  # True is an int to Python, not to JSON
  if not isinstance(value, kinds):
    raise ApiError(400, f"'{name}' must be {what}, got {value!r}"[:200], name,
                   "invalid_type")
  return value


def _check(name: str, problem: str | None, param: str | None = None) -> None:
  if problem:
    raise ApiError(400, f"'{name}' {problem}", param or name, "invalid_value")


def refuse_unsupported(body: dict, chat: bool) -> None:
  """400 naming the first field set that this server cannot honour."""
  for name, off in UNSUPPORTED.items():
    if name in body and body[name] not in off:
      raise ApiError(400, f"'{name}' is not supported by this server (a "
                     "small language model that writes plain text); drop "
                     "it", name, "unsupported_parameter")
  best_of = _field(body, "best_of", (int,), None, "an integer")
  n = body.get("n") if isinstance(body.get("n"), int) else 1
  if best_of is not None and not chat and best_of != n:
    raise ApiError(400, f"'best_of' {best_of} differs from 'n' {n}: this "
                   "server returns every choice it makes and ranks none; "
                   "drop 'best_of'", "best_of", "unsupported_value")


def read_bias(body: dict, vocab_size: int) -> tuple[tuple[int, float], ...]:
  """`logit_bias`: {"token id": bias in [-100, 100]} as (id, bias) pairs."""
  bias = _field(body, "logit_bias", (dict,), {},
                "an object of token ids and biases")
  if len(bias) > MAX_BIAS:
    raise ApiError(400, f"'logit_bias' has {len(bias)} entries, more than "
                   f"{MAX_BIAS}", "logit_bias", "invalid_value")
  out = []
  for key, value in bias.items():
    if not (key.isdigit() and int(key) < vocab_size) or isinstance(
        value, bool) or not isinstance(value, (int, float)):
      raise ApiError(400, f"'logit_bias' maps token ids (0..{vocab_size - 1})"
                     f" to numbers, got {key!r}: {value!r}"[:200],
                     "logit_bias", "invalid_value")
    out.append((int(key), float(value)))
  _check("logit_bias", sampling.option_problem("logit_bias", tuple(out)))
  return tuple(sorted(out))


def read_params(body: dict, max_tokens_cap: int, chat: bool,
                vocab_size: int) -> Params:
  """The sampling options and reporting settings of a request body."""
  refuse_unsupported(body, chat)
  number = (int, float)
  echo = False if chat else _field(body, "echo", (bool,), False,
                                   "true or false")
  max_name = "max_tokens"
  max_tokens = _field(body, "max_tokens", (int,), None, "an integer")
  if chat and max_tokens is None:
    max_name = "max_completion_tokens"
    max_tokens = _field(body, max_name, (int,), None, "an integer")
  if max_tokens is None:
    max_tokens = min(max_tokens_cap, 256 if chat else 16)
  if not (max_tokens == 0 and echo):  # 0: the prompt scored, nothing made
    _check(max_name, sampling.option_problem("max_new_tokens", max_tokens))
  if max_tokens > max_tokens_cap:
    raise ApiError(400, f"'{max_name}' is {max_tokens}, more than this "
                   f"server's cap of {max_tokens_cap} (lm-jax-serve "
                   "--max_tokens)", max_name, "invalid_value")
  temperature = float(_field(body, "temperature", number, 1.0, "a number"))
  top_p = float(_field(body, "top_p", number, 1.0, "a number"))
  top_k = _field(body, "top_k", (int,), 0, "an integer")
  presence = float(_field(body, "presence_penalty", number, 0.0, "a number"))
  frequency = float(_field(body, "frequency_penalty", number, 0.0,
                           "a number"))
  for name, value in (("temperature", temperature), ("top_p", top_p),
                      ("top_k", top_k), ("presence_penalty", presence),
                      ("frequency_penalty", frequency)):
    _check(name, sampling.option_problem(name, value))
  n = _field(body, "n", (int,), 1, "an integer")
  if not 1 <= n <= MAX_N:
    raise ApiError(400, f"'n' must be in 1..{MAX_N}, got {n}", "n",
                   "invalid_value")
  seed = _field(body, "seed", (int,), None, "an integer")
  if seed is None:
    seed = secrets.randbelow(SEED_RANGE[1])
  elif not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
    raise ApiError(400, f"'seed' must be in [-2**31, 2**31), got {seed}",
                   "seed", "invalid_value")
  stop = _field(body, "stop", (str, list), (), "a string or a list of them")
  stops = (stop,) if isinstance(stop, str) else tuple(stop)
  if len(stops) > MAX_STOPS or not all(isinstance(s, str) for s in stops):
    raise ApiError(400, f"'stop' must be a string or up to {MAX_STOPS} "
                   "strings", "stop", "invalid_type")
  stops = tuple(s for s in stops if s)
  stream = _field(body, "stream", (bool,), False, "true or false")
  stream_options = _field(body, "stream_options", (dict,), {},
                          "an object")
  if stream_options and not stream:
    raise ApiError(400, "'stream_options' is only allowed with 'stream': "
                   "true", "stream_options", "invalid_value")
  include_usage = _field(stream_options, "include_usage", (bool,), False,
                         "true or false")
  if chat:
    wanted = _field(body, "logprobs", (bool,), False, "true or false")
    top = _field(body, "top_logprobs", (int,), 0, "an integer")
    logprobs = top if wanted else -1
  else:
    top = _field(body, "logprobs", (int,), None, "an integer")
    logprobs = -1 if top is None else top
  from lm_jax.serve.engine import TOP
  if logprobs > TOP:
    raise ApiError(400, f"at most {TOP} top log-probabilities per token, "
                   f"asked for {logprobs}", "logprobs", "invalid_value")
  options = sampling.SamplingOptions(
      max_new_tokens=max(1, max_tokens), temperature=temperature,
      top_k=top_k, top_p=top_p, presence_penalty=presence,
      frequency_penalty=frequency, logit_bias=read_bias(body, vocab_size))
  return Params(options, n, seed, stops, stream, max(-1, logprobs),
                max_tokens, echo, include_usage)


def choice_seed(seed: int, i: int) -> int:
  """The seed of choice i: seed + i, wrapped into SEED_RANGE."""
  low, high = SEED_RANGE
  return (seed + i - low) % (high - low) + low


def _ids(x) -> bool:
  return isinstance(x, list) and bool(x) and all(
      isinstance(t, int) and not isinstance(t, bool) for t in x)


def read_prompts(body: dict, vocab_size: int) -> list[str | list[int]]:
  """A completion's prompts, in order: `prompt` as a string, a list of
  strings, a list of token ids (one prompt) or a list of lists of ids."""
  prompt = body.get("prompt")
  if isinstance(prompt, str):
    prompts: list = [prompt]
  elif _ids(prompt):
    prompts = [prompt]
  elif isinstance(prompt, list) and prompt and (
      all(isinstance(p, str) for p in prompt) or all(_ids(p) for p in prompt)):
    prompts = prompt
  else:
    raise ApiError(400, "'prompt' must be a string, a list of strings, a "
                   "list of token ids or a list of lists of token ids (none "
                   "empty)", "prompt", "invalid_type")
  for p in prompts:
    if not p:
      raise ApiError(400, "'prompt' is empty: give at least one character",
                     "prompt", "invalid_value")
    if isinstance(p, list) and not all(0 <= t < vocab_size for t in p):
      raise ApiError(400, f"'prompt' holds a token id outside 0.."
                     f"{vocab_size - 1} (this model's vocabulary)", "prompt",
                     "invalid_value")
  return prompts


def _content(m: dict) -> str | None:
  """A message's text: its content string, or its text parts joined."""
  content = m.get("content")
  if isinstance(content, list) and content and all(
      isinstance(p, dict) and p.get("type") == "text"
      and isinstance(p.get("text"), str) for p in content):
    return "".join(p["text"] for p in content)
  return content if isinstance(content, str) else None


def read_messages(body: dict) -> list[dict]:
  """The messages, each {'role', 'content'} with its content as text."""
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages or not all(
      isinstance(m, dict) and isinstance(m.get("role"), str)
      for m in messages):
    raise ApiError(400, "'messages' must be a non-empty list of "
                   "{'role': str, 'content': str}", "messages", "invalid_type")
  out = []
  for i, m in enumerate(messages):
    content = _content(m)
    if content is None:
      raise ApiError(400, f"'messages[{i}].content' must be a string or a "
                     "list of text parts ({'type': 'text', 'text': str}); "
                     "this server reads text only",
                     f"messages[{i}].content", "invalid_type")
    out.append({"role": m["role"], "content": content})
  return out


def transcript(messages: list[dict]) -> str:
  """What a language model continues in a chat: the messages as a play's
  speeches (the speaker, a colon, the text), then the assistant's. The
  roles stay lower case: a small vocabulary may lack capitals."""
  speeches = [f"{m['role']}:\n{m['content']}\n\n" for m in messages]
  return "".join(speeches) + "assistant:\n"


def last_user_message(messages: list[dict]) -> str:
  for m in reversed(messages):
    if m["role"] == "user":
      return m["content"]
  raise ApiError(400, "no message has the role 'user': an echo bot answers "
                 "the last user message", "messages", "invalid_value")


class Choice:
  """One choice's tokens and text, cut at the first stop: the Detokenizer's
  released pieces, each with its Token (`add` returns them in pairs)."""

  def __init__(self, tokenizer, prompt: list[int], stops: tuple[str, ...]):
    self.text = detokenize.Detokenizer(tokenizer, prompt, stops)
    self.pending: collections.deque[Token] = collections.deque()
    self.finish: str | None = None
    self.reported = False  # the finish was passed on

  def add(self, token: Token | None) -> list[tuple[Token, detokenize.Piece]]:
    """Takes the next token (None: the end) and returns what is released."""
    if self.finish:
      return []
    if token is None:
      pieces = self.text.finish()
    else:
      self.pending.append(token)
      pieces = self.text.add([token.id])
    if self.text.stopped or token is None:
      self.finish = "stop" if self.text.stopped else "length"
    released = [(self.pending.popleft(), piece) for piece in pieces]
    if self.finish:
      self.pending.clear()
    return released


class Echo(NamedTuple):
  """A prompt said back before its completion (`echo`): each token's text,
  and their scores (`scoring.score`; None: no logprobs were asked)."""
  pieces: list[str]
  scored: scoring.Scored | None


def new_id(prefix: str) -> str:
  return f"{prefix}-{secrets.token_hex(12)}"


class Writer:
  """Builds OpenAI's response objects, whole or chunk by chunk, from the
  released (Token, Piece) pairs of each choice.

  Choice i answers prompt i // n (OpenAI's numbering); with `echoes` (one
  per prompt) its text and logprobs start with the prompt's.
  `token_ids` (the page asks for it) adds each chunk's token ids, and the
  first prompt's ids and texts to the first chunk.
  """

  def __init__(self, model: str, tokenizer, params: Params, chat: bool,
               prompts: list[list[int]], token_ids: bool,
               echoes: list[Echo] | None = None):
    self.model, self.tokenizer = model, tokenizer
    self.params, self.chat = params, chat
    self.id = new_id("chatcmpl" if chat else "cmpl")
    self.created = now()
    # The prompt's ids go with the first chunk, then None.
    self.prompt: list[int] | None = prompts[0]
    self.prompt_tokens = sum(len(p) for p in prompts)
    self.token_ids = token_ids
    count = len(prompts) * params.n
    self.echoes = ([echoes[i // params.n] for i in range(count)] if echoes
                   else None)
    self.texts = [""] * count
    self.released: list[list] = [[] for _ in range(count)]
    self.finish: list[str | None] = [None] * count
    self.echoed = [False] * count  # the echo was sent (streams)

  def add(self, i: int, released, finish) -> None:
    self.texts[i] += "".join(piece.text for _, piece in released)
    self.released[i] += released
    self.finish[i] = finish or self.finish[i]

  def _logprobs(self, released, offset: int):
    top = self.params.logprobs
    if top < 0:
      return None
    if self.chat:
      return chat_logprobs(released, top, self.tokenizer)
    return completion_logprobs(released, top, self.tokenizer, offset)

  def _head(self, kind: str) -> dict:
    return {"id": self.id, "object": kind, "created": self.created,
            "model": self.model}

  def _echo(self, i: int) -> tuple[str, dict | None]:
    """Choice i's echoed prompt: its text, and its logprobs (or None)."""
    assert self.echoes is not None
    echo = self.echoes[i]
    top = self.params.logprobs
    if top < 0 or echo.scored is None:
      return "".join(echo.pieces), None
    return "".join(echo.pieces), echo_logprobs(echo, top, self.tokenizer)

  def echo_chunk(self, i: int) -> dict:
    """A stream's first chunk of choice i: the prompt said back."""
    text, logprobs = self._echo(i)
    self.texts[i] = text
    return {**self._head("text_completion"), "choices": [
        {"index": i, "text": text, "logprobs": logprobs,
         "finish_reason": None}]}

  def usage(self) -> dict:
    made = sum(len(r) for r in self.released)
    return {"prompt_tokens": self.prompt_tokens, "completion_tokens": made,
            "total_tokens": self.prompt_tokens + made}

  def usage_chunk(self) -> dict:
    """A stream's last chunk when `stream_options.include_usage`."""
    kind = "chat.completion.chunk" if self.chat else "text_completion"
    return {**self._head(kind), "choices": [], "usage": self.usage()}

  def chunk(self, i: int, released, finish, role: bool = False) -> dict:
    offset = len(self.texts[i])
    self.add(i, released, finish)
    text = "".join(piece.text for _, piece in released)
    choice = {"index": i, "logprobs": self._logprobs(released, offset),
              "finish_reason": finish}
    if self.chat:
      choice["delta"] = {"role": "assistant", "content": ""} if role else (
          {"content": text} if text else {})
      kind = "chat.completion.chunk"
    else:
      choice["text"] = text
      kind = "text_completion"
    if self.token_ids:
      choice["token_ids"] = [token.id for token, _ in released]
      if self.prompt is not None:  # the first chunk: the prompt's tokens
        choice["prompt_token_ids"] = self.prompt
        choice["prompt_tokens"] = prompt_texts(self.tokenizer, self.prompt)
        self.prompt = None
    return {**self._head(kind), "choices": [choice]}

  def whole(self) -> dict:
    choices = []
    for i in range(len(self.texts)):
      text, logprobs = self.texts[i], self._logprobs(self.released[i], 0)
      if self.echoes is not None:
        said, echoed = self._echo(i)
        text = said + text
        logprobs = self._logprobs(self.released[i], len(said))
        if echoed is not None and logprobs is not None:
          logprobs = {k: echoed[k] + logprobs[k] for k in echoed}
      choice = {"index": i, "finish_reason": self.finish[i] or "length",
                "logprobs": logprobs}
      if self.chat:
        choice["message"] = {"role": "assistant", "content": text}
      else:
        choice["text"] = text
      choices.append(choice)
    return {**self._head("chat.completion" if self.chat else
                         "text_completion"), "choices": choices,
            "usage": self.usage()}


def prompt_texts(tokenizer, prompt: list[int]) -> list[str]:
  """The text of each prompt token, as the page shows them side by side (a
  character split across tokens is the last one's)."""
  text = detokenize.Detokenizer(tokenizer)
  return [piece.text for piece in text.add(prompt) + text.finish()]


def completion_logprobs(pairs: list[tuple[Token, detokenize.Piece]],
                        top: int, tokenizer, offset: int) -> dict:
  """A completion choice's `logprobs` for the released tokens: each one's
  text (they join into the choice's text), and the alternatives by their
  own text (`detokenize.token_text`)."""
  out: dict[str, list] = {"tokens": [], "token_logprobs": [],
                          "top_logprobs": [], "text_offset": []}
  for token, piece in pairs:
    out["tokens"].append(piece.text)
    out["token_logprobs"].append(finite(token.logprob))
    out["top_logprobs"].append({
        detokenize.token_text(tokenizer, i): finite(p)
        for i, p in zip(token.top_ids[:top], token.top_logprobs[:top])})
    out["text_offset"].append(offset)
    offset += len(piece.text)
  return out


def echo_logprobs(echo: Echo, top: int, tokenizer) -> dict:
  """An echoed prompt's `logprobs`: each token's text and log-probability
  given the tokens before it, the first None (nothing comes before it)."""
  assert echo.scored is not None
  s = echo.scored
  offsets = [0]
  for piece in echo.pieces[:-1]:
    offsets.append(offsets[-1] + len(piece))
  return {"tokens": list(echo.pieces),
          "token_logprobs": [None] + [finite(float(x)) for x in s.logprobs[1:]],
          "top_logprobs": [None] + [
              {detokenize.token_text(tokenizer, int(i)): finite(float(p))
               for i, p in zip(ids[:top], lps[:top])}
              for ids, lps in zip(s.top_ids[1:], s.top_logprobs[1:])],
          "text_offset": offsets}


def chat_logprobs(pairs: list[tuple[Token, detokenize.Piece]], top: int,
                  tokenizer) -> dict:
  """A chat choice's `logprobs.content` for the released tokens: each
  token's bytes, and its text as OpenAI shows it (`detokenize.shown`)."""
  entry = lambda text, data, lp: {"token": text, "logprob": finite(lp),
                                  "bytes": list(data)}
  return {"content": [
      {**entry(detokenize.shown(piece.data), piece.data, token.logprob),
       "top_logprobs": [entry(detokenize.token_text(tokenizer, i),
                              detokenize.token_bytes(tokenizer, i) or b"", p)
                        for i, p in zip(token.top_ids[:top],
                                        token.top_logprobs[:top])]}
      for token, piece in pairs]}


def finite(x: float) -> float | None:
  """JSON has no -inf: a log-probability of 0 probability becomes None."""
  return x if math.isfinite(x) else None


def now() -> int:
  return int(time.time())
