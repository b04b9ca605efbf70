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
from typing import Any

from lm_jax.generation import detokenize, sampling
from lm_jax.serve.engine import Token

SEED_RANGE = (-2**31, 2**31)  # what jax.random.key takes without x64
MAX_STOPS = 4  # as OpenAI's API
MAX_N = 8  # choices per request


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


def _field(body: dict, name: str, kinds: tuple, default: Any = None,
           what: str = ""):
  """body[name] if of one of `kinds` (None or absent: `default`); else 422."""
  value = body.get(name)
  if value is None:
    return default
  if isinstance(value, bool) and bool not in kinds:
    kinds = ()  # True is an int to Python, not to JSON
  if not isinstance(value, kinds):
    raise ApiError(422, f"'{name}' must be {what}, got {value!r}"[:200], name,
                   "invalid_type")
  return value


def _check(name: str, problem: str | None, param: str | None = None) -> None:
  if problem:
    raise ApiError(400, f"'{name}' {problem}", param or name, "invalid_value")


def read_params(body: dict, max_tokens_cap: int, chat: bool) -> Params:
  """The sampling options and reporting settings of a request body."""
  number = (int, float)
  max_name = "max_tokens"
  max_tokens = _field(body, "max_tokens", (int,), None, "an integer")
  if chat and max_tokens is None:
    max_name = "max_completion_tokens"
    max_tokens = _field(body, max_name, (int,), None, "an integer")
  if max_tokens is None:
    max_tokens = min(max_tokens_cap, 256 if chat else 16)
  _check(max_name, sampling.option_problem("max_new_tokens", max_tokens))
  if max_tokens > max_tokens_cap:
    raise ApiError(400, f"'{max_name}' is {max_tokens}, more than this "
                   f"server's cap of {max_tokens_cap} (lm-jax-serve "
                   "--max_tokens)", max_name, "invalid_value")
  # Checked before float(): an integer of 400 digits is a refusal, not an
  # OverflowError.
  temperature = _field(body, "temperature", number, 1.0, "a number")
  top_p = _field(body, "top_p", number, 1.0, "a number")
  top_k = _field(body, "top_k", (int,), 0, "an integer")
  for name, value in (("temperature", temperature), ("top_p", top_p),
                      ("top_k", top_k)):
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
    raise ApiError(422, f"'stop' must be a string or up to {MAX_STOPS} "
                   "strings", "stop", "invalid_type")
  stops = tuple(s for s in stops if s)
  stream = _field(body, "stream", (bool,), False, "true or false")
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
  options = sampling.SamplingOptions(max_new_tokens=max_tokens,
                                     temperature=float(temperature),
                                     top_k=top_k, top_p=float(top_p))
  return Params(options, n, seed, stops, stream, max(-1, logprobs))


def choice_seed(seed: int, i: int) -> int:
  """The seed of choice i: seed + i, wrapped into SEED_RANGE."""
  low, high = SEED_RANGE
  return (seed + i - low) % (high - low) + low


def read_prompt(body: dict) -> str:
  """A completion's prompt: a string, or a list of one string."""
  prompt = body.get("prompt")
  if isinstance(prompt, list) and len(prompt) == 1:
    prompt = prompt[0]
  if not isinstance(prompt, str):
    raise ApiError(422, "'prompt' must be a string (or a list of one)",
                   "prompt", "invalid_type")
  if not prompt:
    raise ApiError(400, "'prompt' is empty: give at least one character",
                   "prompt", "invalid_value")
  return prompt


def read_messages(body: dict) -> list[dict]:
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages or not all(
      isinstance(m, dict) and isinstance(m.get("role"), str)
      and isinstance(m.get("content"), str) for m in messages):
    raise ApiError(422, "'messages' must be a non-empty list of "
                   "{'role': str, 'content': str}", "messages", "invalid_type")
  return messages


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


def new_id(prefix: str) -> str:
  return f"{prefix}-{secrets.token_hex(12)}"


class Writer:
  """Builds OpenAI's response objects, whole or chunk by chunk, from the
  released (Token, Piece) pairs of each choice.

  `token_ids` (the page asks for it) adds each chunk's token ids, and the
  prompt's ids and texts to the first chunk.
  """

  def __init__(self, model: str, tokenizer, params: Params, chat: bool,
               prompt: list[int], token_ids: bool):
    self.model, self.tokenizer = model, tokenizer
    self.params, self.chat = params, chat
    self.id = new_id("chatcmpl" if chat else "cmpl")
    self.created = now()
    # The prompt's ids go with the first chunk, then None.
    self.prompt: list[int] | None = prompt
    self.prompt_tokens = len(prompt)
    self.token_ids = token_ids
    self.texts = [""] * params.n
    self.released: list[list] = [[] for _ in range(params.n)]
    self.finish = [None] * params.n

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
    for i in range(self.params.n):
      choice = {"index": i, "finish_reason": self.finish[i] or "length",
                "logprobs": self._logprobs(self.released[i], 0)}
      if self.chat:
        choice["message"] = {"role": "assistant", "content": self.texts[i]}
      else:
        choice["text"] = self.texts[i]
      choices.append(choice)
    made = sum(len(r) for r in self.released)
    return {**self._head("chat.completion" if self.chat else
                         "text_completion"), "choices": choices,
            "usage": {"prompt_tokens": self.prompt_tokens,
                      "completion_tokens": made,
                      "total_tokens": self.prompt_tokens + made}}


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
