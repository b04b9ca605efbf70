"""lm-jax-serve against real clients: the official `openai` client and a
headless Chromium (Selenium), on a live uvicorn server on a free port."""

import contextlib
import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import openai
import pytest
import uvicorn

from configs import echo_s2s
from lm_jax import tasks
from lm_jax.data import tokenizers
from lm_jax.generation import replies, sampling
from lm_jax.models.base import LanguageModel
from lm_jax.runs import rundir
from lm_jax.serve import api, engine
from lm_jax.serve import app as serve_app

from conftest import run_command


# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow

PROMPT = "LINE 1: the"  # in the vocabulary of conftest's corpus_text()


@contextlib.contextmanager
def live(run, name="smoke", **settings):
  """The app serving `run`, on a free localhost port, in a thread."""
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  sock.listen()
  app = serve_app.create_app(run, name, serve_app.Settings(
      **{"warm_up": False, **settings}))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                         timeout_graceful_shutdown=1))
  thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]),
                            daemon=True)
  thread.start()
  deadline = time.monotonic() + 120
  while not server.started:
    assert thread.is_alive() and time.monotonic() < deadline
    time.sleep(0.05)
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join(timeout=30)


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


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
  """A tiny encoder-decoder echo bot (configs/echo_s2s.py:smoke)."""
  from lm_jax.loop import trainer
  config = echo_s2s.get_config("smoke")
  workdir = tmp_path_factory.mktemp("echo")
  trainer.train_and_evaluate(config, workdir)
  return rundir.load_run(workdir)


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


def test_errors_are_openai_error_objects(server):
  c = client(server)
  with pytest.raises(openai.BadRequestError) as e:
    c.completions.create(model="smoke", prompt="x" * 40, max_tokens=2)
  assert e.value.code == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError, match="cap of 200"):
    c.completions.create(model="smoke", prompt=PROMPT, max_tokens=201)
  with pytest.raises(openai.BadRequestError, match="temperature"):
    c.completions.create(model="smoke", prompt=PROMPT, temperature=-1)
  with pytest.raises(openai.NotFoundError) as e:
    c.completions.create(model="gpt-9", prompt=PROMPT)
  assert e.value.code == "model_not_found"
  with pytest.raises(openai.UnprocessableEntityError):
    c.completions.create(model="smoke", prompt=PROMPT,
                         extra_body={"max_tokens": "many"})
  status, body = post(server, "/v1/completions", b"{not json")
  assert status == 400 and body["error"]["type"] == "invalid_request_error"
  status, body = post(server, "/v1/completions",
                      json.dumps({"prompt": "a" * (8 << 20)}).encode())
  assert status == 413 and "limit" in body["error"]["message"]
  status, body = post(server, "/v1/nothing", b"{}")
  assert status == 404 and body["error"]["message"]


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


def test_an_api_key_is_required_when_set(run):
  with live(run, api_key="s3cret") as url:
    with pytest.raises(openai.AuthenticationError):
      client(url, "wrong").models.list()
    assert [m.id for m in client(url, "s3cret").models.list()] == ["smoke"]


@pytest.mark.slow
def test_an_echo_bot_answers_the_last_user_message(echo_run):
  with live(echo_run, name="echo") as url:
    got = client(url).chat.completions.create(
        model="echo", temperature=0, max_tokens=30, messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello there"}])
  want = replies.reply(echo_run.params, echo_run.model, echo_run.tokenizer,
                       ["hello there"], jax.random.key(0),
                       sampling.SamplingOptions(max_new_tokens=30,
                                                temperature=0.0))[0]
  assert got.choices[0].message.content == want
  assert got.choices[0].message.role == "assistant"


def test_prefill_chunks_are_powers_of_two():
  assert engine.chunks(100) == [64, 32, 4]
  assert engine.chunks(1) == [1] and engine.chunks(128) == [128]


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


def serve_command(*flags):
  return run_command("lm_jax.cli.serve", *flags)


@pytest.mark.slow
def test_a_busy_port_or_a_bad_run_is_one_line_and_exit_2(smoke_run, tmp_path):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    out = serve_command(f"--workdir={smoke_run}",
                        f"--port={sock.getsockname()[1]}")
  assert out.returncode == 2
  assert out.stderr.strip().startswith("error: cannot listen on")
  out = serve_command(f"--workdir={tmp_path}", "--host=0.0.0.0", "--port=0")
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert "no authentication" in lines[0] and "not a run directory" in lines[1]


def _browser():
  """A headless Chromium from the distribution's packages, or a skip."""
  chromium = shutil.which("chromium")
  driver = shutil.which("chromedriver")
  if not chromium or not driver:
    pytest.skip("chromium and chromium-driver are not installed (.ci/run "
                "installs them)")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1100,900"):
    options.add_argument(arg)
  return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_the_page_streams_text_and_shows_probabilities(server):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  browser = _browser()
  try:
    browser.get(server + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.ID, "generate").is_displayed())
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys(PROMPT)
    length = browser.find_element(By.ID, "max_tokens")
    length.clear()
    length.send_keys("150")
    # Count the shown tokens each time the page changes: text streams in.
    browser.execute_script("""
      window.seen = [];
      new MutationObserver(() => window.seen.push(document.querySelectorAll(
          '#output span:not(.prompt)').length)).observe(
          document.getElementById('output'), {childList: true});""")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: "tokens in" in b.find_element(By.ID, "status").text)
    new = (By.CSS_SELECTOR, "#output span:not(.prompt)")
    assert len(browser.find_elements(*new)) == 150
    seen = browser.execute_script("return window.seen")
    assert any(0 < n < 150 for n in seen)  # some shown before the end
    token = browser.find_elements(*new)[3]
    ActionChains(browser).move_to_element(token).perform()
    tip = browser.find_element(By.ID, "tip")
    wait.until(lambda b: tip.is_displayed())
    assert tip.text.startswith("chosen") and tip.text.count("%") == 6
    token.click()  # what the model attended to there
    wait.until(lambda b: "layer 1" in b.find_element(By.ID, "inside").text)
  finally:
    browser.quit()


@pytest.mark.slow
def test_an_echo_bot_gets_the_chat_view(echo_run):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  browser = _browser()
  try:
    with live(echo_run, name="echo") as url:
      browser.get(url + "/")
      wait = WebDriverWait(browser, 60)
      wait.until(lambda b: b.find_element(By.ID, "chat-input").is_displayed())
      assert not browser.find_element(By.ID, "text-view").is_displayed()
      browser.find_element(By.ID, "chat-input").send_keys("hello there\n")
      answer = (By.CSS_SELECTOR, ".msg.assistant")
      wait.until(lambda b: b.find_elements(*answer)
                 and b.find_element(*answer).text != "...")
      want = replies.reply(echo_run.params, echo_run.model,
                           echo_run.tokenizer, ["hello there"],
                           jax.random.key(0), sampling.SamplingOptions(
                               max_new_tokens=256, temperature=0.0))[0]
      assert browser.find_element(*answer).text == want.strip()
  finally:
    browser.quit()
