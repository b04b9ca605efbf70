"""lm-jax-serve on a run that fills blanks (lm_jax/serve/unmasking.py): its
completions are unmasked, through the official `openai` client, and the
page's blanks are filled; a run that cannot fill says what it can."""

import json

import jax
import numpy as np
import pytest

from lm_jax import tasks
from lm_jax.generation import sampling
from lm_jax.runs import rundir
from lm_jax.serve import api

from serve.conftest import client, get, live, post

# A live server on trained runs: the full suite only.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(masked_run):
  return rundir.load_run(masked_run)


@pytest.fixture(scope="module")
def server(run):
  with live(run, name="masked", max_tokens=64) as url:
    yield url


def test_the_page_is_told_what_the_run_can_do(server):
  info = get(server, "/v1/playground")
  assert info["can"] == ["continue", "fill", "interactive"]
  assert info["blank"] == "_"


def test_a_completion_is_the_prompt_unmasked(server, run):
  done = client(server).completions.create(
      model="masked", prompt="LINE 3", max_tokens=8, temperature=0, seed=4,
      logprobs=2)
  choice = done.choices[0]
  task = tasks.task_of(run.model)
  prompt = run.tokenizer.encode("LINE 3")
  out, kept = task.continuation(
      run, prompt, 8, jax.random.key(api.choice_seed(4, 0)),
      sampling.SamplingOptions(max_new_tokens=8, temperature=0.0))
  assert kept == len(prompt)
  assert choice.text == run.tokenizer.decode(np.asarray(out.tokens)[kept:])
  assert len(choice.text) == 8 and choice.finish_reason == "length"
  logprobs = choice.logprobs.token_logprobs
  assert len(logprobs) == 8 and all(lp <= 0 for lp in logprobs)
  assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)


def test_a_streamed_completion_and_a_stop(server):
  pieces = [chunk.choices[0].text for chunk in client(server).completions
            .create(model="masked", prompt="LINE", max_tokens=10, seed=1,
                    stream=True)]
  assert len("".join(pieces)) == 10
  stopped = client(server).completions.create(
      model="masked", prompt="LINE", max_tokens=10, seed=1,
      stop="".join(pieces)[3:5])
  assert stopped.choices[0].finish_reason == "stop"
  assert stopped.choices[0].text == "".join(pieces)[:3]


def test_more_tokens_than_the_context_is_a_400(server, run):
  W = run.model.context_length
  status, body = post(server, "/v1/completions", json.dumps(
      {"prompt": "LINE", "max_tokens": W}).encode())
  assert status == 400 and "within its context" in body["error"]["message"]


def test_echo_needs_a_run_that_can_score(server):
  status, body = post(server, "/v1/completions", json.dumps(
      {"prompt": "LINE", "max_tokens": 0, "echo": True,
       "logprobs": 1}).encode())
  assert status == 400 and body["error"]["param"] == "echo"
  assert body["error"]["message"].startswith(
      "'echo' needs a run that can score a text")


def test_the_page_fills_blanks(server):
  status, body = post(server, "/v1/fill", json.dumps(
      {"prompt": "LINE _: the qu_ck"}).encode())
  assert status == 200, body
  blanks = [t for t in body["tokens"] if t["blank"]]
  assert len(body["tokens"]) == len("LINE _: the qu_ck") and len(blanks) == 2
  assert "_" not in body["text"] and body["text"].startswith("LINE ")
  for t in blanks:
    assert 0 < t["p"] <= 1 and len(t["top"]) == 5
    assert t["top"][0][1] >= t["top"][-1][1]
  status, body = post(server, "/v1/fill", b'{"prompt": "no blank"}')
  assert status == 400 and "no blank" in body["error"]["message"]


def test_a_run_that_cannot_fill_says_what_it_can(smoke_run):
  with live(rundir.load_run(smoke_run)) as url:
    status, body = post(url, "/v1/fill", b'{"prompt": "LINE _"}')
    assert get(url, "/v1/playground")["can"] == ["continue", "interactive",
                                                  "score"]
  assert status == 400
  assert body["error"]["message"] == (
      "/v1/fill needs a run that can fill blanks (trained with "
      "configs/char_mlm.py, say); this run can continue a prompt, answer in "
      "a prompt loop (--interactive), score a text (each token's "
      "log-probability)")
