"""The guard in front of the app (lm_jax/serve/guard.py), met through raw
HTTP as a browser sends it: a Host that does not name the server (DNS
rebinding) and a foreign Origin (a cross-origin text/plain POST) are
refused with error objects; --allow_origin lets one origin in, with CORS
headers; the server's own page (same origin) is served and answered; an
exception the app lets through is a 500 error object and one log line."""

import http.client
import json

import pytest

from lm_jax.serve import app as serve_app
from lm_jax.serve import guard

from serve.conftest import PROMPT, live

pytestmark = pytest.mark.slow  # a live server

BODY = json.dumps({"prompt": PROMPT, "max_tokens": 2}).encode()


def request(url, method, path, body=None, headers=None):
  """(status, headers, body) of one raw request; `headers` may set Host."""
  host_port = url.removeprefix("http://")
  conn = http.client.HTTPConnection(host_port, timeout=60)
  conn.putrequest(method, path, skip_host=True)
  given = {"Host": host_port, **(headers or {})}
  for name, value in given.items():
    if value is not None:
      conn.putheader(name, value)
  if body is not None:
    conn.putheader("Content-Length", str(len(body)))
  conn.endheaders(body)
  response = conn.getresponse()
  data = response.read()
  conn.close()
  return response.status, dict(response.getheaders()), data


def test_host_names_are_read_without_their_port():
  assert guard.host_name("localhost:8000") == "localhost"
  assert guard.host_name("[::1]:8000") == "::1"
  assert guard.host_name("Example.COM") == "example.com"


def test_a_rebound_host_and_a_foreign_origin_are_refused(run):
  with live(run) as url:
    port = url.rpartition(":")[2]
    status, _, data = request(url, "POST", "/v1/completions", BODY,
                              {"Host": f"evil.example:{port}",
                               "Content-Type": "application/json"})
    error = json.loads(data)["error"]
    assert status == 403 and error["code"] == "invalid_host"
    # The simple POST a foreign page may send without a preflight.
    status, _, data = request(url, "POST", "/v1/completions", BODY,
                              {"Origin": "http://evil.example",
                               "Content-Type": "text/plain"})
    error = json.loads(data)["error"]
    assert status == 403 and error["code"] == "invalid_origin"
    assert "--allow_origin=http://evil.example" in error["message"]
    status, _, _ = request(url, "GET", "/v1/models", None, {"Origin": "null"})
    assert status == 403
    # The server's own page: same origin, by every loopback name.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
      status, _, data = request(url, "POST", "/v1/completions", BODY, {
          "Host": host, "Origin": f"http://{host}",
          "Content-Type": "application/json"})
      assert status == 200 and json.loads(data)["choices"]
    status, _, data = request(url, "GET", "/", None)
    assert status == 200 and b"<html" in data.lower()


def test_allow_origin_lets_that_origin_in_with_cors_headers(run):
  page = "http://localhost:3000"
  with live(run, allow_origins=(page,)) as url:
    status, headers, _ = request(url, "OPTIONS", "/v1/completions", None, {
        "Origin": page, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 200
    assert headers["access-control-allow-origin"] == page
    status, headers, data = request(url, "POST", "/v1/completions", BODY, {
        "Origin": page, "Content-Type": "application/json"})
    assert status == 200 and headers["access-control-allow-origin"] == page
    status, _, _ = request(url, "POST", "/v1/completions", BODY, {
        "Origin": "http://localhost:3001", "Content-Type": "text/plain"})
    assert status == 403


def test_an_unanswered_exception_is_a_500_error_object(run, monkeypatch,
                                                        caplog):
  def broken(*args, **kwargs):
    raise RuntimeError("a bug")

  monkeypatch.setattr(serve_app, "_model_card", broken)
  with live(run) as url:
    status, _, data = request(url, "GET", "/v1/models")
    assert status == 500
    assert json.loads(data)["error"]["code"] == "server_error"
    assert request(url, "GET", "/health")[0] == 200  # it goes on
  logged = [r for r in caplog.records if r.name == guard.__name__]
  assert len(logged) == 1 and "RuntimeError: a bug" in logged[0].getMessage()
  assert not any(r.exc_info for r in caplog.records)
