"""The serving engine (lm_jax/serve/engine.py): requests decode in one
batch and keep their text, lm-jax-sample's text for the same seed, a full
queue answers 429 and a client leaving frees its slot; prefill in chunks.
No request stops the engine: hostile bodies are 400s, a request that
cannot be decoded fails alone, and a dead engine is a 503 on /health."""

import contextlib
import io
import json
import threading
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import openai
import pytest

from lm_jax import tasks
from lm_jax.generation import sampling
from lm_jax.serve import engine

from serve.conftest import PROMPT, client, get, live, post, serving

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


def sample_command_text(run, prompt, seed, options) -> str:
  """What `lm-jax-sample` prints after the prompt (its own code path)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    tasks.task_of(run.model).sample(run, prompt, jax.random.key(seed),
                                    options, 1, "")
  printed = out.getvalue()
  assert printed.startswith(prompt) and printed.endswith("\n")
  return printed[len(prompt):-1]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.8, 0, 1.0),
                                                     (1.0, 5, 0.9)])
def test_the_same_seed_gives_lm_jax_samples_text(run, server, temperature,
                                                  top_k, top_p):
  # 40 tokens: past the smoke model's 32-token context, so the window slides.
  options = sampling.SamplingOptions(max_new_tokens=40,
                                     temperature=temperature, top_k=top_k,
                                     top_p=top_p)
  got = client(server).completions.create(
      model="smoke", prompt=PROMPT, max_tokens=40, temperature=temperature,
      top_p=top_p, seed=3, extra_body={"top_k": top_k})
  assert got.choices[0].text == sample_command_text(run, PROMPT, 3, options)
  assert got.choices[0].finish_reason == "length"
  assert got.usage.completion_tokens == 40


def test_concurrent_requests_share_the_batch_and_keep_their_text(server):
  c = client(server)
  alone = [c.completions.create(model="smoke", prompt=PROMPT, max_tokens=30,
                                seed=s).choices[0].text for s in range(4)]
  before = get(server, "/health")
  together = [None] * 4

  def one(s):
    together[s] = c.completions.create(model="smoke", prompt=PROMPT,
                                       max_tokens=30, seed=s).choices[0].text

  threads = [threading.Thread(target=one, args=(s,)) for s in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert together == alone
  after = get(server, "/health")
  rows = (after["mean_batch"] * after["steps"]
          - before["mean_batch"] * before["steps"])
  assert rows / (after["steps"] - before["steps"]) > 1.5  # batched


def test_a_full_queue_answers_429_and_a_client_leaving_frees_its_slot(run):
  with live(run, max_batch=1, max_queue=1) as url:
    c = client(url)
    stream = c.completions.create(model="smoke", prompt=PROMPT,
                                  max_tokens=1000, stream=True)
    next(iter(stream))  # decoding: it holds the only slot
    queued = threading.Thread(target=lambda: c.completions.create(
        model="smoke", prompt=PROMPT, max_tokens=2))
    queued.start()
    deadline = time.monotonic() + 30
    while get(url, "/health")["queued"] < 1:
      assert time.monotonic() < deadline
      time.sleep(0.02)
    with pytest.raises(openai.RateLimitError):
      c.completions.create(model="smoke", prompt=PROMPT, max_tokens=2)
    stream.close()  # the client leaves mid-stream
    queued.join(timeout=30)
    assert not queued.is_alive()
    health = get(url, "/health")
    assert health["active"] == 0 and health["queued"] == 0




def test_prefill_chunks_are_powers_of_two():
  assert engine.chunks(100) == [64, 32, 4]
  assert engine.chunks(1) == [1] and engine.chunks(128) == [128]


def _body(**fields) -> bytes:
  return json.dumps({"prompt": PROMPT, "max_tokens": 3, **fields}).encode()


HOSTILE = [  # (body, what the 400's message names)
    (_body(top_k=2**40), "top_k"),  # past the step's int32
    (_body(top_k=10**300), "301 digits"),
    (_body(temperature=10**400), "temperature"),
    (_body(temperature=1e-40), "float32"),  # below its smallest normal
    (_body(top_p=5e-45), "float32"),
    (_body(seed=10**300), "seed"),
    (_body(n=10**300), "'n'"),
    (_body(max_tokens=10**300), "max_tokens"),
    (b'{"prompt": "a", "top_k": 1' + b"0" * 5000 + b"}", "too many digits"),
    (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    (b'{"prompt": "\\ud800 lone"}', "surrogate"),
    (b'{"prompt": "\xff"}', "not valid JSON"),
    (b'{"prompt": ', "not valid JSON"),
]


def test_hostile_bodies_are_400s_and_the_engine_goes_on(server, caplog):
  for body, named in HOSTILE:
    status, answer = post(server, "/v1/completions", body)
    assert status == 400, (body[:60], answer)
    assert named in answer["error"]["message"], answer
  done = client(server).completions.create(model="smoke", prompt=PROMPT,
                                           max_tokens=3, seed=1)
  assert done.choices[0].finish_reason == "length"
  assert get(server, "/health")["status"] == "ok"
  assert not any(r.exc_info for r in caplog.records)


def _wait(events: list, deadline: float = 60) -> None:
  end = time.monotonic() + deadline
  while not events or events[-1] is not None:
    assert time.monotonic() < end
    time.sleep(0.01)


def test_a_request_that_cannot_be_decoded_fails_alone(run):
  decoder = engine.Engine(run.params, run.model, max_batch=2, max_queue=4)
  try:
    bad = sampling.SamplingOptions(max_new_tokens=3)
    object.__setattr__(bad, "top_k", 2**40)  # what validation refuses
    prompt = np.asarray(run.tokenizer.encode(PROMPT), np.int32)
    got: dict[str, list] = {"bad": [], "good": []}
    requests = {name: engine.Request(prompt, options, 0, got[name].append)
                for name, options in (
                    ("bad", bad),
                    ("good", sampling.SamplingOptions(max_new_tokens=3)))}
    for request in requests.values():
      decoder.submit(request)
    _wait(got["bad"])
    _wait(got["good"])
    assert got["bad"] == [None]
    failed = requests["bad"].failed
    assert failed and "OverflowError" in failed.message and not failed.stopped
    assert len(got["good"]) == 4 and requests["good"].failed is None
    assert decoder.alive
  finally:
    decoder.stop()


def test_a_dead_engine_makes_health_503_and_requests_fail_at_once(run):
  with serving(run) as (url, server):
    decoder = server.config.app.state.served.engine

    def broken():
      raise RuntimeError("a bug in the loop")

    decoder._turn = broken  # from the loop's next turn on
    c = client(url)
    with pytest.raises(openai.InternalServerError) as e:  # in flight: 500
      c.completions.create(model="smoke", prompt=PROMPT, max_tokens=2)
    assert "decoding thread failed" in e.value.message
    decoder.thread.join(timeout=30)
    with pytest.raises(openai.APIStatusError) as e:
      c.completions.create(model="smoke", prompt=PROMPT, max_tokens=2)
    assert e.value.status_code == 503 and "restart" in e.value.message
    try:
      urllib.request.urlopen(url + "/health", timeout=30)
      raise AssertionError("/health said ok")
    except urllib.error.HTTPError as health:
      assert health.code == 503
      assert json.loads(health.read())["status"] == "unavailable"
