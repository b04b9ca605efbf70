"""Shared helpers of the serve tests: the app on a live uvicorn server on a
free port, the official `openai` client and raw requests to it, and a live
server on the smoke run."""

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from lm_jax.runs import rundir
from lm_jax.serve import app as serve_app
from lm_jax.serve import server as serve_server

PROMPT = "LINE 1: the"  # in the vocabulary of conftest's corpus_text()


@contextlib.contextmanager
def serving(run, name="smoke", guards=None, **settings):
  """(URL, server): the app serving `run`, on a free localhost port, in a
  thread, behind lm-jax-serve's server
  (`lm_jax.serve.server.server(**guards)`)."""
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  sock.listen()
  app = serve_app.create_app(run, name, serve_app.Settings(
      **{"warm_up": False, **settings}))
  server = serve_server.server(app, **(guards or {}))
  thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]),
                            daemon=True)
  thread.start()
  deadline = time.monotonic() + 120
  while not server.started:
    assert thread.is_alive() and time.monotonic() < deadline
    time.sleep(0.05)
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
  finally:
    server.should_exit = True
    thread.join(timeout=30)


@contextlib.contextmanager
def live(run, name="smoke", guards=None, **settings):
  """The URL of `serving`."""
  with serving(run, name, guards, **settings) as (url, _):
    yield url


def client(url, key="unused"):
  return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0,
                       timeout=120)


def post(url, path, body: bytes, headers=None):
  """(status, JSON) of a raw POST."""
  request = urllib.request.Request(url + path, data=body, headers={
      "Content-Type": "application/json", **(headers or {})})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def get(url, path):
  with urllib.request.urlopen(url + path, timeout=60) as response:
    return json.loads(response.read())


@pytest.fixture(scope="module")
def run(smoke_run):
  return rundir.load_run(smoke_run)


@pytest.fixture(scope="module")
def server(run):
  with live(run, max_tokens=200, max_batch=4, max_queue=8) as url:
    yield url
