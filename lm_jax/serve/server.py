"""The HTTP server around the app: uvicorn, with what it lacks against
hostile clients, and a stop that answers every request in flight.

uvicorn 0.54 runs its h11 protocol here (httptools is not installed), and
its Config has no timeout on reading a request: `timeout_keep_alive` is
armed only after a response, and the first byte of the next request
disarms it, so a client that sends its headers a byte at a time holds its
connection for ever; `h11_max_incomplete_event_size` bounds the size of
the headers, not their time; and `limit_concurrency` counts those held
connections, so 128 of them made every other client get 503 (uvicorn's
issue #157 lists a request-start timeout, still not there; an ASGI
middleware runs only once the headers are in). Hence `protocol`, a subclass of uvicorn's H11Protocol (Config's `http` takes a
class), which adds:
  - a header timeout: a request's headers must arrive within
    `header_timeout` seconds of the connection opening (or of the previous
    response), else the connection closes, with a 408 if part of a request
    came (an idle connection is closed silently: a client that reuses it
    must not read a 408 as the answer to its next request);
  - a body timeout: the body within `body_timeout` of the headers, else
    408 and the connection closes;
  - a cap per client address on pending connections (idle, or whose
    request has not fully arrived): past `max_pending`, that address's
    oldest pending connection is closed. One address holding slow
    connections keeps at most `max_pending` of them, far below
    `limit_concurrency`, and a client that sends its request at once
    always gets in.

`Server` is uvicorn's with a graceful stop: on SIGINT or SIGTERM the app
takes no new requests (503) and those in flight have DRAIN_S seconds to
finish before they end with an error (a 503 error object, or an error
event then [DONE] in a stream: `app.Served.begin_stop`); uvicorn's own
timeout, which cancels what is left with a traceback and a plain-text 500,
is set past that.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lm_jax.serve import api

HEADER_TIMEOUT = 10.0  # seconds for a request's headers
BODY_TIMEOUT = 30.0  # seconds for its body, once the headers are in
MAX_PENDING = 16  # pending connections per client address
DRAIN_S = 2.0  # seconds the requests in flight have once a stop is asked


def _timeout_response() -> bytes:
  body = json.dumps(api.error_body(
      408, "the request did not arrive in time; send it whole at once",
      code="request_timeout")).encode()
  return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json"
          b"\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
          % (len(body), body))


def protocol(header_timeout: float = HEADER_TIMEOUT,
             body_timeout: float = BODY_TIMEOUT,
             max_pending: int = MAX_PENDING) -> type[H11Protocol]:
  """uvicorn's h11 protocol with read timeouts and a cap per address on
  pending connections (the module docstring); one class per server, which
  holds that server's pending connections."""
  pending: dict[str, dict[Any, None]] = {}  # address -> oldest first

  class Protocol(H11Protocol):
    _state = ""  # "headers", "body" (pending) or "arrived"
    _timer: asyncio.TimerHandle | None = None
    _started = False  # bytes of the awaited request came

    def connection_made(self, transport) -> None:  # type: ignore[override]
      super().connection_made(transport)
      self._track()

    def data_received(self, data: bytes) -> None:
      self._started = True
      super().data_received(data)
      self._track()

    def on_response_complete(self) -> None:
      super().on_response_complete()
      self._track()

    def connection_lost(self, exc: Exception | None) -> None:
      self._set_state("closed")
      super().connection_lost(exc)

    def _track(self) -> None:
      """Follows the request's arrival after anything that moves it."""
      if self.transport.is_closing():
        self._set_state("closed")
      elif self.cycle is None or self.cycle.response_complete:
        self._set_state("headers")
      elif self.cycle.more_body:
        self._set_state("body")
      else:
        self._set_state("arrived")

    def _set_state(self, state: str) -> None:
      if state == self._state:
        return  # slow bytes do not restart the clock
      self._state = state
      self._started = False
      if self._timer is not None:
        self._timer.cancel()
        self._timer = None
      address = self.client[0] if self.client else ""
      mine = pending.setdefault(address, {})
      mine.pop(self, None)
      if state in ("headers", "body"):
        limit = header_timeout if state == "headers" else body_timeout
        self._timer = self.loop.call_later(limit, self._time_out)
        mine[self] = None
        while len(mine) > max_pending:  # the oldest pending one goes
          oldest = next(iter(mine))
          mine.pop(oldest)
          oldest.transport.close()
      if not mine:
        pending.pop(address, None)

    def _time_out(self) -> None:
      self._timer = None
      if self.transport.is_closing():
        return
      response_started = self.cycle is not None and (
          self.cycle.response_started and not self.cycle.response_complete)
      if (self._started or self._state == "body") and not response_started:
        self.transport.write(_timeout_response())
      self.transport.close()

  return Protocol


class Server(uvicorn.Server):
  """uvicorn's server; a stop signal first calls `on_stop()` (in the event
  loop), which ends the app's requests with an answer."""

  def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]):
    super().__init__(config)
    self.on_stop = on_stop

  def handle_exit(self, sig, frame) -> None:
    if not self.should_exit:
      try:  # a signal handler: leave the work to the loop
        asyncio.get_running_loop().call_soon_threadsafe(self.on_stop)
      except RuntimeError:
        self.on_stop()
    super().handle_exit(sig, frame)


def server(app, *, limit_concurrency: int | None = None,
           header_timeout: float = HEADER_TIMEOUT,
           body_timeout: float = BODY_TIMEOUT,
           max_pending: int = MAX_PENDING) -> Server:
  """A server for `app` (`app.create_app`'s): run it with
  `.run(sockets=[sock])`."""
  config = uvicorn.Config(
      app, log_level="warning", limit_concurrency=limit_concurrency,
      http=protocol(header_timeout, body_timeout, max_pending),
      timeout_graceful_shutdown=int(DRAIN_S) + 5)
  return Server(config, lambda: app.state.served.begin_stop(DRAIN_S))
