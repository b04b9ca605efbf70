"""The server: an OpenAI-compatible API and the playground page (Starlette).

    GET  /v1/models, /v1/models/{id}, /health
    POST /v1/completions, /v1/chat/completions  (stream: server-sent events)
    POST /tokenize, /detokenize  (vLLM's shapes)
    POST /v1/internals  (what the model computed at one position: the page)
    GET  /  and /static/...  (the playground, files shipped in the package)

What the run can do (its task's `can`) picks how it is served: a language
model's requests go to the batching engine (engine.py); an
encoder-decoder's replies (an echo bot) are written one at a time by
`lm_jax.generation.replies`, and a masked LM's completions are unmasked
and its blanks filled (unmasking.py), in a worker thread. A completion
with `echo` says its prompts back, scored in one batched forward pass by
the task (`Can.SCORE`: `lm_jax/generation/scoring.py`), in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import pathlib
import secrets
import threading

import anyio
import jax
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lm_jax import tasks
from lm_jax.data import pairs, tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import detokenize, replies
from lm_jax.serve import api, engine, guard, unmasking
from lm_jax.views import internals as internals_view

STATIC = pathlib.Path(__file__).parent / "static"
MAX_INSIDE = 256  # tokens a recurrent model's internals replay at most
MAX_PROMPT = 4096  # prompt tokens of a model without a context limit


@dataclasses.dataclass(frozen=True)
class Settings:
  """The server's limits (lm-jax-serve's flags)."""
  max_tokens: int = 1024  # cap on a request's max_tokens
  max_batch: int = 32  # slots decoded together
  max_queue: int = 64  # requests waiting for a slot; more: 429
  max_body: int = 1 << 20  # request body bytes; more: 413
  api_key: str | None = None  # if set, every API request needs it (Bearer)
  warm_up: bool = True  # compile the engine's programs before serving
  host: str = "127.0.0.1"  # the address bound: Host may name it (guard.py)
  allow_origins: tuple[str, ...] = ()  # other origins whose pages may call
  # A request naming another model: answered by the one served (False, as
  # llama.cpp does), or 404 model_not_found (True, as vLLM does).
  strict_model_name: bool = False
  # Devices a batch of slots is split over (engine.Engine's `devices`):
  # lm-jax-serve --cpu_devices=0 makes one JAX CPU device per core.
  devices: int = 1


class Served:
  """A loaded run and what serves it."""

  def __init__(self, run, name: str, settings: Settings):
    self.run, self.name, self.settings = run, name, settings
    self.model, self.tokenizer = run.model, run.tokenizer
    self.task = tasks.task_of(run.model)
    # The page's default prompt: from the run's own text (as the CLI hint).
    self.example_prompt = self.task.example(run.config, run.tokenizer)
    self.replies = tasks.Can.REPLY in self.task.can  # written whole
    self.unmasks = tasks.Can.FILL in self.task.can  # no left-to-right decoding
    self.engine: engine.Engine | None = None
    self.replying = (asyncio.Semaphore(1) if self.replies or self.unmasks
                     else None)
    self.waiting = 0  # requests waiting for the semaphore
    self.inside_lock = threading.Lock()
    self.stopping = False  # set by begin_stop: new requests get 503

  def start(self) -> None:
    if self.replying is None:
      self.engine = engine.Engine(self.run.params, self.model,
                                  self.settings.max_batch,
                                  self.settings.max_queue,
                                  self.settings.devices)
      if self.settings.warm_up:
        self.engine.warm_up()

  def begin_stop(self, drain_s: float) -> None:
    """A signal to stop: no new requests; those in flight have `drain_s`
    seconds, then end with an error (engine.Engine.begin_stop)."""
    self.stopping = True
    if self.engine:
      self.engine.begin_stop(drain_s)

  def stop(self) -> None:
    if self.engine:
      self.engine.stop()

  def check_running(self) -> None:
    """503 when the server is stopping or its engine cannot decode."""
    if self.stopping:
      raise api.ApiError(503, engine.STOPPED, code="unavailable")
    if self.engine is not None and not self.engine.alive:
      raise api.ApiError(503, self.engine.failure or engine.STOPPED,
                         code="unavailable")

  def check_queue(self) -> None:
    """429 when `max_queue` requests already wait their turn."""
    if self.waiting >= self.settings.max_queue:
      raise api.ApiError(429, "the server is busy; retry later",
                         code="rate_limit_exceeded")

  async def in_turn(self, work):
    """`work()` in a worker thread, one request at a time (replies and
    unmasking are not batched)."""
    self.waiting += 1
    entered = False
    try:
      async with self.replying:
        self.waiting -= 1
        entered = True
        self.check_running()
        return await anyio.to_thread.run_sync(work)
    finally:
      if not entered:
        self.waiting -= 1

  def encode(self, text: str | list[int], param: str,
             scored: bool = False) -> list[int]:
    """Prompt ids (of a text, or given); unknown symbols or a prompt past
    the context: 400. A prompt that is `scored` may be longer (up to
    MAX_PROMPT): scoring reads it in windows."""
    if isinstance(text, list):
      ids = text
    else:
      try:
        ids = list(tokenizers.encode_prompt(self.tokenizer, text)[0])
      except UserError as e:
        raise api.ApiError(400, str(e), param, "invalid_value") from None
    W = None if scored else self.model.context_length
    if len(ids) > (W or MAX_PROMPT):
      what = (f"the model's context of {W}" if W else
              f"this server takes ({MAX_PROMPT})")
      raise api.ApiError(
          400, f"the prompt has {len(ids)} tokens, more than {what}; "
          "shorten it", param, "context_length_exceeded")
    return [int(i) for i in ids]


def _post_choice(loop, queue: asyncio.Queue, i: int,
                 event: engine.Token | None) -> None:
  """Hands choice i's engine event to the request's event loop (from the
  engine's thread); after shutdown there is nobody to tell."""
  try:
    loop.call_soon_threadsafe(queue.put_nowait, (i, event))
  except RuntimeError:  # the loop is closed
    pass


class Generation:
  """The n choices of each prompt of one request, decoded by the engine;
  `events` yields (choice, released [(Token, Piece)], finish reason or
  None). Choice i is prompt i // n's choice i % n, seeded by i % n: a
  prompt gets the tokens it would get alone. A prompt past the model's
  context (an echo, scored whole) is continued from its last W tokens."""

  def __init__(self, served: Served, prompts: list[list[int]],
               params: api.Params):
    loop = asyncio.get_running_loop()
    self.queue: asyncio.Queue = asyncio.Queue()
    n, W = params.n, served.model.context_length
    self.choices = [api.Choice(served.tokenizer, p, params.stops)
                    for p in prompts for _ in range(n)]
    self.requests = [engine.Request(
        np.asarray(prompts[i // n][-W:] if W else prompts[i // n], np.int32),
        params.options, api.choice_seed(params.seed, i % n),
        functools.partial(_post_choice, loop, self.queue, i))
        for i in range(len(self.choices))]
    assert served.engine is not None  # a run that continues text has one
    try:
      for r in self.requests:
        served.engine.submit(r)
    except engine.Busy as e:
      self.cancel()
      raise api.ApiError(429, f"the server is busy ({e}); retry later",
                         code="rate_limit_exceeded") from None
    except engine.Stopping as e:
      self.cancel()
      raise api.ApiError(503, str(e), code="unavailable") from None

  def cancel(self) -> None:
    for r in self.requests:
      r.cancelled = True

  async def events(self):
    left = len(self.requests)
    while left:
      i, event = await self.queue.get()
      if event is None:
        left -= 1
        failed = self.requests[i].failed
        if failed is not None:  # the request was cut: no finish_reason
          self.cancel()
          raise (api.ApiError(503, failed.message, code="unavailable")
                 if failed.stopped else api.ApiError(
                     500, failed.message, code="server_error"))
      choice = self.choices[i]
      if choice.finish is not None and choice.reported:
        continue
      released = choice.add(event)
      if choice.finish is not None:
        choice.reported = True
        self.requests[i].cancelled = True  # a stop string: free the slot
      yield i, released, choice.finish


class Nothing:
  """max_tokens 0 (an echo): no choice makes a token."""

  def __init__(self, count: int):
    self.count = count

  async def events(self):
    for i in range(self.count):
      yield i, [], "length"

  def cancel(self) -> None:
    pass


class FirstTokens:
  """max_tokens 1 after an echo (lm-eval's request): each choice's one
  token, sampled from the distribution the scoring pass found after its
  prompt (`engine.first_tokens`: the engine's first step, without a
  prefill of its own)."""

  def __init__(self, served: Served, prompts: list[list[int]],
               echoes: list[api.Echo], params: api.Params):
    self.served, self.prompts, self.params = served, prompts, params
    self.following = [e.scored.following for e in echoes if e.scored]

  def _tokens(self) -> list[engine.Token]:
    n, p = self.params.n, self.params
    count = len(self.prompts) * n
    return engine.first_tokens(
        np.stack([self.following[i // n] for i in range(count)]), p.options,
        [api.choice_seed(p.seed, i % n) for i in range(count)])

  async def events(self):
    tokens = await anyio.to_thread.run_sync(self._tokens)
    for i, token in enumerate(tokens):
      choice = api.Choice(self.served.tokenizer,
                          self.prompts[i // self.params.n], self.params.stops)
      yield i, choice.add(token) + choice.add(None), choice.finish

  def cancel(self) -> None:
    pass


class Reply:
  """The n replies of an encoder-decoder, written whole."""

  def __init__(self, served: Served, text: str, params: api.Params):
    self.served, self.params = served, params
    try:
      self.src = replies.encode_prompts(served.tokenizer, [text],
                                        served.model.max_source_len)
    except UserError as e:
      raise api.ApiError(400, str(e), "messages", "invalid_value") from None
    served.check_queue()

  async def events(self):
    served = self.served
    rows = await served.in_turn(self._answer)
    for i, row in enumerate(rows):
      reply = pairs.reply_ids(row)
      choice = api.Choice(served.tokenizer, [], ())
      released = [piece for t in reply for piece in choice.add(
          engine.Token(int(t), 0.0, (), ()))] + choice.add(None)
      yield i, released, "stop" if len(reply) < len(row) else "length"

  def _answer(self) -> list[np.ndarray]:
    """Each choice's ids: the reply, then EOS and PAD if it ended."""
    s, p = self.served, self.params
    return [np.asarray(replies.generate(
        s.run.params, s.model, jax.numpy.asarray(self.src),
        jax.random.key(api.choice_seed(p.seed, i)), p.options))[0]
        for i in range(p.n)]

  def cancel(self) -> None:
    pass


def _error(status: int, message: str, param=None, code=None) -> JSONResponse:
  return JSONResponse(api.error_body(status, message, param, code), status)


async def _api_error(request: Request, e: Exception) -> JSONResponse:
  assert isinstance(e, api.ApiError)  # the exception it is registered for
  return _error(e.status, e.message, e.param, e.code)


async def _http_error(request: Request, e: Exception) -> JSONResponse:
  assert isinstance(e, HTTPException)  # the exception it is registered for
  code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
  return _error(e.status_code, f"{e.detail}: {request.method} "
                f"{request.url.path}", code=code)


# An oversized body up to this many bytes is read and dropped before the
# 413 goes out: a server that answers and closes while the client is still
# uploading leaves that client with a broken pipe instead of the answer.
# Past it the answer goes out at once (the client may see the pipe break).
DRAIN_BYTES = 64 << 20


async def _drain(request: Request, size: int) -> None:
  """Read and drop the rest of a body of `size` bytes, when small enough."""
  if size > DRAIN_BYTES:
    return
  seen = 0
  try:
    async for chunk in request.stream():
      seen += len(chunk)
      if seen > DRAIN_BYTES:
        return
  except ClientDisconnect:
    pass


async def read_json(request: Request, limit: int) -> dict:
  """The JSON object a request carries; 413 past `limit` bytes."""
  length = request.headers.get("content-length", "")
  too_big = api.ApiError(413, f"the request body is larger than this "
                         f"server's limit of {limit} bytes",
                         code="request_too_large")
  if length.isdigit() and int(length) > limit:
    await _drain(request, int(length))
    raise too_big
  body = bytearray()
  try:
    async for chunk in request.stream():
      body += chunk
      if len(body) > limit:
        await _drain(request, len(body))
        raise too_big
  except ClientDisconnect:  # gone, or closed by server.py's body timeout
    raise api.ApiError(408, "the request body did not arrive in time",
                       code="request_timeout") from None
  try:
    data = json.loads(body)
  except (ValueError, RecursionError) as e:
    why = ("nested too deeply" if isinstance(e, RecursionError) else
           "not valid JSON" if not str(e).startswith("Exceeds") else
           "not valid JSON here: a number has too many digits")
    raise api.ApiError(400, f"the request body is {why}",
                       code="invalid_json") from None
  if _has_surrogate(data):
    raise api.ApiError(400, "the request body has a lone UTF-16 surrogate "
                       "(an escape such as \\ud800 that is not half of a "
                       "pair): send valid Unicode text", code="invalid_json")
  if not isinstance(data, dict):
    raise api.ApiError(400, "the request body must be a JSON object",
                       code="invalid_type")
  return data


def _has_surrogate(data) -> bool:
  """Whether a string in `data` (parsed JSON) holds a lone surrogate,
  which no tokenizer can encode and no response can carry."""
  try:
    json.dumps(data, ensure_ascii=False).encode("utf-8")
  except UnicodeEncodeError:
    return True
  return False


def _guard(handler):
  """`handler` behind the API key, when the server has one."""

  async def guarded(request: Request):
    key = request.app.state.served.settings.api_key
    if key is not None:
      sent = request.headers.get("authorization", "")
      if not secrets.compare_digest(sent.encode(), f"Bearer {key}".encode()):
        return _error(401, "this server needs an API key: send the header "
                      "'Authorization: Bearer KEY'", code="invalid_api_key")
    return await handler(request, request.app.state.served)

  return guarded


def _model_card(served: Served) -> dict:
  return {"id": served.name, "object": "model", "created": 0,
          "owned_by": "lm_jax"}


async def models(request, served: Served):
  return JSONResponse({"object": "list", "data": [_model_card(served)]})


async def model(request, served: Served):
  if request.path_params["name"] != served.name:
    raise api.ApiError(404, f"no model {request.path_params['name']!r}; this "
                       f"server has {served.name!r}", "model",
                       "model_not_found")
  return JSONResponse(_model_card(served))


async def health(request, served: Served):
  """ok, with the batch's load; 503 when the server cannot decode (its
  engine's thread ended) or is stopping."""
  load = served.engine.load() if served.engine else {}
  try:
    served.check_running()
  except api.ApiError as e:
    return JSONResponse({"status": "unavailable", "model": served.name,
                         "error": e.message, **load}, 503)
  return JSONResponse({"status": "ok", "model": served.name, **load})


async def playground(request, served: Served):
  """What the page needs to know of the model: what it can do (`can`)
  picks the page's view."""
  return JSONResponse({
      "model": served.name, "kind": served.model.kind,
      "task": served.model.task, "context_length": served.model.context_length,
      "max_tokens": served.settings.max_tokens,
      "example_prompt": served.example_prompt,
      "can": [c.name.lower() for c in tasks.Can if c in served.task.can],
      "blank": tasks.UnmaskOptions().blank, "step": served.run.step})


def _check_model(body: dict, served: Served) -> None:
  """A request naming another model is answered by the one served, unless
  the server is strict (lm-jax-serve --strict_model_name)."""
  name = body.get("model")
  if name is not None and not isinstance(name, str):
    raise api.ApiError(400, f"'model' must be a string, got {name!r}"[:200],
                       "model", "invalid_type")
  if served.settings.strict_model_name and name not in (None, served.name):
    raise api.ApiError(404, f"no model {name!r}; this server has "
                       f"{served.name!r}", "model", "model_not_found")


def _params(body: dict, served: Served, chat: bool) -> api.Params:
  return api.read_params(body, served.settings.max_tokens, chat,
                         served.model.vocab_size)


async def completions(request, served: Served):
  body = await read_json(request, served.settings.max_body)
  _check_model(body, served)
  prompts = api.read_prompts(body, served.model.vocab_size)
  params = _params(body, served, chat=False)
  if len(prompts) * params.n > api.MAX_CHOICES:
    raise api.ApiError(400, f"{len(prompts)} prompts x n {params.n} make "
                       f"more than {api.MAX_CHOICES} choices; send fewer "
                       "per request", "prompt", "invalid_value")
  return await _respond(request, served, prompts, params, chat=False)


async def chat_completions(request, served: Served):
  body = await read_json(request, served.settings.max_body)
  _check_model(body, served)
  messages = api.read_messages(body)
  params = _params(body, served, chat=True)
  if served.replies:
    prompt = api.last_user_message(messages)
  else:
    prompt = api.transcript(messages)
    if not params.stops:  # the end of the assistant's speech
      params = dataclasses.replace(params, stops=("\n\n",))
  return await _respond(request, served, [prompt], params, chat=True)


async def _echoes(served: Served, prompts: list[list[int]],
                  params: api.Params) -> list[api.Echo]:
  """The prompts said back; scored (one batched forward pass, in a worker
  thread) when logprobs are asked, or max_tokens is 1 (the same pass finds
  the distribution of the one token to make)."""
  scored: list = [None] * len(prompts)
  if params.logprobs >= 0 or params.max_tokens == 1:
    scored = await anyio.to_thread.run_sync(
        served.task.score, served.run, prompts, max(0, params.logprobs))
  return [api.Echo(api.prompt_texts(served.tokenizer, p), s)
          for p, s in zip(prompts, scored)]


def _one(prompts: list, what: str) -> str | list[int]:
  if len(prompts) != 1:
    raise api.ApiError(400, f"{what} one prompt per request; send the "
                       f"{len(prompts)} one by one", "prompt")
  return prompts[0]


async def _respond(request, served: Served, prompts: list, params: api.Params,
                   chat: bool):
  source: Reply | unmasking.Unmasking | Generation | Nothing | FirstTokens
  param = "messages" if chat else "prompt"
  echoes = None
  if params.echo and tasks.Can.SCORE not in served.task.can:
    raise api.ApiError(400, str(served.task.refusal(tasks.Can.SCORE,
                                                    "'echo'")), "echo")
  if served.replies:
    if params.logprobs >= 0:
      raise api.ApiError(400, "an encoder-decoder's replies come without "
                         "log-probabilities; drop 'logprobs'", "logprobs")
    prompt = _one(prompts, "an encoder-decoder answers")
    if not isinstance(prompt, str):
      raise api.ApiError(400, "an encoder-decoder answers a text prompt, not "
                         "token ids", "prompt", "invalid_type")
    source = Reply(served, prompt, params)
    ids = [[t for t in source.src[0] if t != tokenizers.PAD_ID]]
  elif served.unmasks:
    ids = [served.encode(_one(prompts, "a masked model unmasks"), param)]
    source = unmasking.Unmasking(served, ids[0], params)
  else:
    served.check_running()
    ids = [served.encode(p, param, scored=params.echo) for p in prompts]
    if params.echo:
      echoes = await _echoes(served, ids, params)
    if params.max_tokens == 0:
      source = Nothing(len(ids) * params.n)
    elif echoes and params.max_tokens == 1:
      source = FirstTokens(served, ids, echoes, params)
    else:
      served.check_running()  # it may have begun to stop while scoring
      source = Generation(served, ids, params)
  write = api.Writer(served.name, served.tokenizer, params, chat, ids,
                     request.query_params.get("token_ids") == "1", echoes)
  if params.stream:
    return StreamingResponse(_stream(source, write),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
  watcher = asyncio.create_task(_watch(request, source))
  try:
    async for i, released, finish in source.events():
      write.add(i, released, finish)
  finally:
    watcher.cancel()
    source.cancel()
  return JSONResponse(write.whole())


async def _watch(request: Request, source) -> None:
  """Cancels `source` when the client of a non-streamed request leaves."""
  while not await request.is_disconnected():
    await asyncio.sleep(0.25)
  source.cancel()


async def _stream(source, write):
  """Server-sent events: one chunk per released piece, then [DONE]. A
  stream cut short (the server stopping, a failed step) ends with an error
  event, as OpenAI's do, and no finish_reason. A client that leaves
  cancels this generator, and `finally` frees its slots."""
  try:
    if write.chat:  # the assistant's role comes first, as OpenAI's does
      yield _event(write.chunk(0, [], None, role=True))
    for i in range(len(write.texts) if write.echoes else 0):
      yield _event(write.echo_chunk(i))
    try:
      async for i, released, finish in source.events():
        if released or finish:
          yield _event(write.chunk(i, released, finish))
    except api.ApiError as e:
      yield _event(api.error_body(e.status, e.message, e.param, e.code))
    else:
      if write.params.include_usage:
        yield _event(write.usage_chunk())
    yield "data: [DONE]\n\n"
  finally:
    source.cancel()


def _event(data: dict) -> str:
  return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def inside(request, served: Served):
  """What the model computed at one position of a text (the page's click):
  a Transformer's attention of each layer and head over the tokens before
  it, a recurrent model's gates; `lm_jax.views.internals`, as
  lm-jax-inspect draws them."""
  body = await read_json(request, served.settings.max_body)
  tokens, position = body.get("tokens"), body.get("position")
  V = served.model.vocab_size
  if (not isinstance(tokens, list) or not tokens or not all(
      isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V
      for t in tokens) or not isinstance(position, int)
      or not 0 <= position < len(tokens)):
    raise api.ApiError(400, f"send 'tokens' (ids in 0..{V - 1}) and a "
                       "'position' among them", "tokens", "invalid_type")
  if served.replies:
    raise api.ApiError(400, "the chat view has no internals to show",
                       "tokens")
  W = served.model.context_length or MAX_INSIDE
  start = max(0, position + 1 - W)
  window = np.asarray(tokens[start:position + 1], np.int32)

  def compute():
    with served.inside_lock:
      return internals_view.model_internals(served.model, served.run.params,
                                            window)

  try:
    got = await anyio.to_thread.run_sync(compute)
  except UserError as e:
    raise api.ApiError(400, str(e), "tokens") from None
  row = np.asarray(got.values[:, :, -1, :internals_view.UNITS], np.float64)
  return JSONResponse({
      "panels": list(got.panels), "columns": got.columns,
      "signed": list(got.signed), "start": start,
      "labels": [detokenize.token_text(served.tokenizer, int(t))
                 for t in window],
      "values": np.round(row, 4).tolist()})  # (L, P, X)


async def fill(request, served: Served):
  """The page's blanks filled (a run that can fill: `unmasking.fill`)."""
  if not served.unmasks:
    raise api.ApiError(400, str(served.task.refusal(tasks.Can.FILL,
                                                    "/v1/fill")), "prompt")
  body = await read_json(request, served.settings.max_body)
  _check_model(body, served)
  prompt = _one(api.read_prompts(body, served.model.vocab_size),
                "filling takes")
  if not isinstance(prompt, str):
    raise api.ApiError(400, "'prompt' must be text with blanks", "prompt",
                       "invalid_type")
  served.check_queue()
  return JSONResponse(await served.in_turn(
      lambda: unmasking.fill(served, prompt)))


async def tokenize(request, served: Served):
  """vLLM's /tokenize: {"prompt": str} (or {"messages": [...]}, as the
  chat transcript) -> {"tokens", "count", "max_model_len"}. These models
  add no special tokens, so `add_special_tokens` changes nothing."""
  body = await read_json(request, served.settings.max_body)
  _check_model(body, served)
  if not isinstance(body.get("add_special_tokens", True), bool):
    raise api.ApiError(400, "'add_special_tokens' must be true or false",
                       "add_special_tokens", "invalid_type")
  if "messages" in body:
    messages = api.read_messages(body)
    text = (api.last_user_message(messages) if served.replies
            else api.transcript(messages))
  elif isinstance(body.get("prompt"), str):
    text = body["prompt"]
  else:
    raise api.ApiError(400, "'prompt' must be a string", "prompt",
                       "invalid_type")
  try:
    ids = [int(i) for i in served.tokenizer.encode(
        text, strict=served.tokenizer.strict_prompts)]
  except UserError as e:
    raise api.ApiError(400, str(e), "prompt", "invalid_value") from None
  return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len":
                       served.model.context_length or MAX_PROMPT})


async def detokenize_route(request, served: Served):
  """vLLM's /detokenize: {"tokens": [ids]} -> {"prompt": str}."""
  body = await read_json(request, served.settings.max_body)
  _check_model(body, served)
  ids = body.get("tokens")
  V = served.model.vocab_size
  if not isinstance(ids, list) or not all(
      isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V
      for t in ids):
    raise api.ApiError(400, f"'tokens' must be a list of token ids in "
                       f"0..{V - 1}", "tokens", "invalid_type")
  return JSONResponse({"prompt": detokenize.detokenize(served.tokenizer,
                                                       ids)})


async def index(request):
  return FileResponse(STATIC / "index.html")


def create_app(run, name: str, settings: Settings = Settings(),
               on_ready=None) -> Starlette:
  """The ASGI app serving `run` (an `lm_jax.runs.rundir.Run`) as `name`;
  `on_ready()` is called once it can answer."""
  served = Served(run, name, settings)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    await anyio.to_thread.run_sync(served.start)
    if on_ready:
      on_ready()
    try:
      yield
    finally:
      served.stop()

  routes = [
      Route("/", index),
      Route("/health", _guard(health)),
      Route("/v1/models", _guard(models)),
      Route("/v1/models/{name:path}", _guard(model)),
      Route("/v1/completions", _guard(completions), methods=["POST"]),
      Route("/v1/chat/completions", _guard(chat_completions),
            methods=["POST"]),
      Route("/v1/internals", _guard(inside), methods=["POST"]),
      Route("/tokenize", _guard(tokenize), methods=["POST"]),
      Route("/detokenize", _guard(detokenize_route), methods=["POST"]),
      Route("/v1/fill", _guard(fill), methods=["POST"]),
      Route("/v1/playground", _guard(playground)),
      Mount("/static", StaticFiles(directory=STATIC), name="static"),
  ]
  app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
      api.ApiError: _api_error, HTTPException: _http_error},
      middleware=guard.middleware(settings.host, settings.allow_origins))
  app.state.served = served
  return app
