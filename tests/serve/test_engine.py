"""The serving engine (lm_jax/serve/engine.py): requests decode in one
batch and keep their text, lm-jax-sample's text for the same seed, a full
queue answers 429 and a client leaving frees its slot; prefill in chunks."""

import contextlib
import io
import threading
import time

import jax
import openai
import pytest

from lm_jax import tasks
from lm_jax.generation import sampling
from lm_jax.serve import engine

from serve.conftest import PROMPT, client, get, live

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
