"""What reaches the app: each request's Host and Origin checked, and any
error the app did not answer turned into an OpenAI error object.

A web page the user visits must not drive the local server:
  - DNS rebinding: the page's own name is made to resolve to 127.0.0.1,
    and its requests then reach the server as "same origin" for the
    browser, carrying that name in Host. So Host must name this server:
    localhost, a loopback address or the address it is bound to (bound to
    every address, 0.0.0.0 or ::, any name is taken: --api_key guards it);
  - cross-origin requests: a page on another origin may send a "simple"
    POST (Content-Type text/plain, no preflight) that the browser delivers
    even though it hides the answer, and the request would run. So a
    request whose Origin is not the server's own (the scheme and the Host
    it was sent to) is refused, unless `allow_origins` (--allow_origin)
    names it; Starlette's CORSMiddleware then answers its preflights and
    marks the responses for it (`middleware`).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from lm_jax.serve import api

LOOPBACK = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")
log = logging.getLogger(__name__)


def host_name(host: str) -> str:
  """The name in a Host header, without its port: 'a:80' -> 'a',
  '[::1]:80' -> '::1'."""
  if host.startswith("["):
    return host[1:].partition("]")[0].lower()
  return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def error(status: int, message: str, code: str) -> JSONResponse:
  body = api.error_body(status, message, code=code)
  body["error"]["type"] = ("invalid_request_error" if status < 500
                           else "server_error")
  return JSONResponse(body, status)


class Guard:
  """ASGI middleware: refuses a Host not naming this server (403,
  `invalid_host`) and a foreign Origin (403, `invalid_origin`); answers an
  exception the app let through with a 500 error object and one line in
  the log, never a traceback."""

  def __init__(self, app, bound: str = "127.0.0.1",
               allow_origins: tuple[str, ...] = ()):
    self.app = app
    self.any_host = bound in EVERY_ADDRESS
    self.hosts = set(LOOPBACK) | {host_name(f"[{bound}]" if ":" in bound
                                            else bound)}
    self.allow_origins = {o.rstrip("/").lower() for o in allow_origins}

  def problem(self, scope) -> JSONResponse | None:
    headers = Headers(scope=scope)
    host = headers.get("host")
    if host is not None and not self.any_host and \
        host_name(host) not in self.hosts:
      return error(403, f"this server does not answer to the host "
                   f"{host[:100]!r}; use http://127.0.0.1 or "
                   "http://localhost (a web page may not rename it)",
                   "invalid_host")
    origin = headers.get("origin")
    if origin is None:
      return None
    own = f"{scope.get('scheme', 'http')}://{host or ''}".lower()
    if origin.lower() in (own, *self.allow_origins):
      return None
    return error(403, f"requests from the origin {origin[:100]!r} are "
                 "refused: this server answers its own page; start it with "
                 f"--allow_origin={origin[:100]} to let that page call it",
                 "invalid_origin")

  async def __call__(self, scope, receive, send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    refusal = self.problem(scope)
    if refusal is not None:
      await refusal(scope, receive, send)
      return
    started = False

    async def sending(message) -> None:
      nonlocal started
      started = started or message["type"] == "http.response.start"
      await send(message)

    try:
      await self.app(scope, receive, sending)
    except asyncio.CancelledError:
      raise
    except Exception as e:  # noqa: BLE001 (a fault: one line, an answer)
      log.error("%s %s failed: %s: %s", scope["method"], scope["path"],
                type(e).__name__, str(e)[:300])
      if not started:
        await error(500, f"the server failed on this request "
                    f"({type(e).__name__}); it goes on serving",
                    "server_error")(scope, receive, send)


def middleware(bound: str, allow_origins: tuple[str, ...]) -> list[Middleware]:
  """The app's middleware, outermost first: the Guard, then the CORS
  headers of the origins allowed."""
  stack = [Middleware(Guard, bound=bound, allow_origins=allow_origins)]
  if allow_origins:
    stack.append(Middleware(
        CORSMiddleware, allow_origins=list(allow_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"]))
  return stack
