"""The HTTP server (lm_jax/serve/server.py) under hostile clients, through
raw sockets and the `openai` client: 128 slow connections from one address
do not lock out a normal client, slow headers and a slow body time out
with 408, and a stop asked while requests are in flight answers each of
them with an error (503, or an error event then [DONE] in a stream)."""

import concurrent.futures
import json
import signal
import socket
import threading
import time

import openai
import pytest

from serve.conftest import PROMPT, client, get, serving

pytestmark = pytest.mark.slow  # a live server


def address(url):
  host, port = url.removeprefix("http://").split(":")
  return host, int(port)


def slow_connection(url) -> socket.socket:
  """A connection that has sent half its headers (slowloris)."""
  sock = socket.create_connection(address(url), timeout=30)
  sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
  return sock


def closed(sock: socket.socket) -> bool:
  """Whether the server closed `sock` (what it sent first is read)."""
  sock.settimeout(0.5)
  try:
    while sock.recv(4096):
      pass
  except TimeoutError:
    return False
  except ConnectionResetError:
    pass
  return True


def test_128_slow_connections_do_not_lock_out_a_normal_client(run):
  # 4 + 8 + 32: lm-jax-serve's connection limit for this batch and queue,
  # which 128 held connections used to fill (every other client: 503).
  with serving(run, max_batch=4, max_queue=8,
               guards=dict(limit_concurrency=44, max_pending=16)) as (url, _):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      held = list(pool.map(lambda _: slow_connection(url), range(128)))
    try:
      for sock in held[-16:]:  # they keep sending, slowly
        sock.sendall(b"X-Slow: 1\r\n")
      done = client(url).completions.create(model="smoke", prompt=PROMPT,
                                            max_tokens=5, seed=1)
      assert done.choices[0].text and done.choices[0].finish_reason
      assert get(url, "/health")["status"] == "ok"
      still_open = [s for s in held if not closed(s)]
      assert len(still_open) <= 16  # the oldest were closed
    finally:
      for sock in held:
        sock.close()


def test_slow_headers_and_a_slow_body_time_out_with_408(run):
  guards = dict(header_timeout=1.0, body_timeout=1.0)
  with serving(run, guards=guards) as (url, _):
    sock = slow_connection(url)
    start = time.monotonic()
    answer = b""
    sock.settimeout(10)
    while chunk := sock.recv(4096):
      answer += chunk
      if time.monotonic() - start < 0.8:
        sock.sendall(b"X-A: 1\r\n")  # bytes keep coming: still timed
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in answer
    assert 0.9 < time.monotonic() - start < 5
    sock.close()
    sock = socket.create_connection(address(url), timeout=10)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100"
                 b"\r\n\r\n{\"prompt\":")
    answer = b""
    while chunk := sock.recv(4096):
      answer += chunk
    assert answer.startswith(b"HTTP/1.1 408")
    sock.close()
    idle = socket.create_connection(address(url), timeout=10)
    assert idle.recv(4096) == b""  # closed silently: no stray 408
    idle.close()
    assert get(url, "/health")["status"] == "ok"


def test_a_stop_answers_each_request_in_flight(run, caplog):
  with serving(run, max_tokens=100_000, max_batch=4,
               max_queue=8) as (url, server):
    c = client(url)
    stream = iter(c.completions.create(model="smoke", prompt=PROMPT,
                                       max_tokens=100_000, stream=True))
    first = next(stream)
    whole: dict = {}

    def wait_whole():
      try:
        c.completions.create(model="smoke", prompt=PROMPT,
                             max_tokens=100_000)
      except openai.APIStatusError as e:
        whole["status"], whole["body"] = e.status_code, e.body

    waiting = threading.Thread(target=wait_whole)
    waiting.start()
    deadline = time.monotonic() + 30
    while get(url, "/health")["active"] < 2:
      assert time.monotonic() < deadline
      time.sleep(0.05)
    server.handle_exit(signal.SIGTERM, None)
    with pytest.raises(openai.APIError, match="shutting down"):
      for chunk in stream:  # the stream ends with an error event
        assert chunk.choices[0].finish_reason is None
    waiting.join(timeout=30)
    assert first.choices[0].finish_reason is None
    assert whole["status"] == 503
    assert whole["body"]["code"] == "unavailable"
  assert not any(r.exc_info for r in caplog.records)
  assert not any("Exception in ASGI" in r.getMessage()
                 for r in caplog.records)


def test_a_cut_stream_sends_an_error_event_then_done(run):
  """The raw events of a stream cut by a stop: no finish_reason 'length'."""
  with serving(run, max_tokens=100_000) as (url, server):
    sock = socket.create_connection(address(url), timeout=30)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 100_000,
                       "stream": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d"
                 b"\r\n\r\n%s" % (len(body), body))
    answer = sock.recv(4096)
    server.handle_exit(signal.SIGINT, None)
    while chunk := sock.recv(65536):
      answer += chunk
    sock.close()
  events = [line[6:] for line in answer.decode().splitlines()
            if line.startswith("data: ")]
  assert events[-1] == "[DONE]"
  assert json.loads(events[-2])["error"]["code"] == "unavailable"
  assert all(json.loads(e)["choices"][0]["finish_reason"] is None
             for e in events[:-2])
