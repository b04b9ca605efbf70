"""The OpenAI protocol of lm-jax-serve (lm_jax/serve/api.py) through the
official `openai` client on a live server: streams, logprobs, stops,
errors as OpenAI error objects, and a BPE text streamed whole characters."""

import json
import urllib.request
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import openai
import pytest

from lm_jax.data import tokenizers
from lm_jax.models.base import LanguageModel
from lm_jax.runs import rundir
from lm_jax.serve import api

from serve.conftest import PROMPT, client, live, post


# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


def test_a_stream_ends_with_done_and_equals_the_whole_answer(server):
  c = client(server)
  whole = c.completions.create(model="smoke", prompt=PROMPT, max_tokens=24,
                               seed=5)
  chunks = list(c.completions.create(model="smoke", prompt=PROMPT,
                                     max_tokens=24, seed=5, stream=True))
  assert len(chunks) > 2  # streamed, not one piece
  assert "".join(ch.choices[0].text for ch in chunks) == whole.choices[0].text
  assert chunks[-1].choices[0].finish_reason == "length"
  raw = urllib.request.urlopen(urllib.request.Request(
      server + "/v1/completions", data=json.dumps(dict(
          prompt=PROMPT, max_tokens=3, stream=True)).encode()), timeout=60)
  assert raw.read().decode().rstrip().endswith("data: [DONE]")


def test_logprobs_hold_the_top_alternatives(server):
  got = client(server).completions.create(
      model="smoke", prompt=PROMPT, max_tokens=10, logprobs=3, seed=1)
  lp = got.choices[0].logprobs
  assert "".join(lp.tokens) == got.choices[0].text
  assert len(lp.token_logprobs) == len(lp.top_logprobs) == 10
  for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
    assert len(top) == 3 and chosen <= max(top.values()) + 1e-6
    assert sum(np.exp(list(top.values()))) <= 1 + 1e-5
  chat = client(server).chat.completions.create(
      model="smoke", messages=[{"role": "user", "content": "the fox"}],
      max_tokens=5, logprobs=True, top_logprobs=2, stop=["zzz"])
  content = chat.choices[0].logprobs.content
  assert len(content) == 5 and all(len(t.top_logprobs) == 2 for t in content)


def test_a_stop_string_ends_the_text_before_it(run, server):
  c = client(server)
  full = c.completions.create(model="smoke", prompt=PROMPT, max_tokens=30,
                              seed=2, temperature=1.0).choices[0].text
  stop = full[10:12]
  cut = c.completions.create(model="smoke", prompt=PROMPT, max_tokens=30,
                             seed=2, temperature=1.0, stop=[stop])
  assert cut.choices[0].text == full[:full.find(stop)]
  assert cut.choices[0].finish_reason == "stop"


def test_errors_are_openai_error_objects(server):
  c = client(server)
  with pytest.raises(openai.BadRequestError) as e:
    c.completions.create(model="smoke", prompt="x" * 40, max_tokens=2)
  assert e.value.code == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError, match="cap of 200"):
    c.completions.create(model="smoke", prompt=PROMPT, max_tokens=201)
  with pytest.raises(openai.BadRequestError, match="temperature"):
    c.completions.create(model="smoke", prompt=PROMPT, temperature=-1)
  with pytest.raises(openai.BadRequestError) as e:
    c.completions.create(model="smoke", prompt=PROMPT,
                         extra_body={"max_tokens": "many"})
  assert e.value.code == "invalid_type"
  status, body = post(server, "/v1/completions", b"{not json")
  assert status == 400 and body["error"]["type"] == "invalid_request_error"
  status, body = post(server, "/v1/completions",
                      json.dumps({"prompt": "a" * (8 << 20)}).encode())
  assert status == 413 and "limit" in body["error"]["message"]
  status, body = post(server, "/v1/nothing", b"{}")
  assert status == 404 and body["error"]["message"]


class Script(LanguageModel):
  """Writes the token ids `script` over and over, greedily: after P0
  prompt tokens, `script[0]`. Its logits favour the next one (10), then
  the tokens `also` (5): the alternatives reported."""
  script: tuple[int, ...] = ()
  also: tuple[int, ...] = ()
  P0: int = 1
  kind: ClassVar[str] = "script"

  def setup(self):
    self.unused = self.param("unused", nn.initializers.zeros, ())

  def initial_state(self, batch_size):
    return jnp.zeros(batch_size, jnp.int32)  # tokens seen

  def extend(self, tokens, state, train=False):
    seen = state[:, None] + jnp.arange(1, tokens.shape[1] + 1)  # (B, T)
    script = jnp.asarray(self.script)
    following = script[(seen - self.P0) % len(self.script)]
    one_hot = lambda ids: jax.nn.one_hot(ids, self.vocab_size)
    logits = 10 * one_hot(following) + 5 * one_hot(
        jnp.asarray(self.also)).sum(0) + self.unused
    return logits, state + tokens.shape[1]


BYTES = (b"\xd0", b"\xd1", b"\xc3", b"\xe2")  # each begins a character


def test_bpe_text_streams_whole_characters_and_byte_tokens_by_their_bytes():
  tok = tokenizers.build_tokenizer("bpe", "the quick brown fox " * 50,
                                   vocab_size=270)
  byte_id = {tok.token_bytes(i): i for i in range(5, tok.vocab_size)}
  words = "Привет, ïve émigré! Ёжик — мир", " café"
  # The model writes one invalid byte (0xff) itself: the one U+FFFD.
  script = [*tok.encode(words[0]), byte_id[b"\xff"], *tok.encode(words[1])]
  want = words[0] + "\ufffd" + words[1]
  prompt = "Тест: "
  P = len(tok.encode(prompt))
  model = Script(tok.vocab_size, tuple(int(i) for i in script),
                 tuple(byte_id[b] for b in BYTES), P)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  run = rundir.Run(None, tok, model, params["params"], 0)
  keys = {f"bytes:\\x{b[0]:02x}" for b in BYTES}
  with live(run, name="script") as url:
    c = client(url)
    chunks = list(c.completions.create(
        model="script", prompt=prompt, max_tokens=len(script), logprobs=5,
        temperature=0, stream=True))
    chat = c.chat.completions.create(
        model="script", messages=[{"role": "user", "content": prompt}],
        max_tokens=len(script), logprobs=True, top_logprobs=5,
        temperature=0, stop=["zzz"])
  texts = [ch.choices[0].text for ch in chunks]
  assert "".join(texts) == want and sum(t.count("\ufffd") for t in texts) == 1
  assert len(texts) > 10  # streamed, not one piece
  for ch in chunks:
    for top in ch.choices[0].logprobs.top_logprobs:
      assert len(top) == 5 and keys <= set(top)  # none fell together
  content = chat.choices[0].logprobs.content
  made = bytes(b for t in content for b in t.bytes)
  assert made.decode("utf-8", "replace") == chat.choices[0].message.content
  start = len(tok.encode(api.transcript([{"role": "user",
                                          "content": prompt}]))) - P
  assert len(content) == len(script)  # the whole script, from `start`
  assert made == b"".join(tok.token_bytes(script[(start + n) % len(script)])
                          for n in range(len(script)))
  assert {t.token for t in content} >= {"bytes:\\xd0", "bytes:\\xff"}
  assert all(keys <= {a.token for a in t.top_logprobs} for t in content)
  assert not any("\ufffd" in t.token for t in content)


