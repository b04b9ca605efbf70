"""The app of lm-jax-serve (lm_jax/serve/app.py) against real clients: an
API key, an echo bot's chat through the `openai` client, and the page in a
headless Chromium (Selenium)."""

import shutil

import jax
import openai
import pytest

from configs import echo_s2s
from lm_jax.generation import replies, sampling
from lm_jax.runs import rundir

from serve.conftest import PROMPT, client, live

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
  """A tiny encoder-decoder echo bot (configs/echo_s2s.py:smoke)."""
  from lm_jax.loop import trainer
  config = echo_s2s.get_config("smoke")
  workdir = tmp_path_factory.mktemp("echo")
  trainer.train_and_evaluate(config, workdir)
  return rundir.load_run(workdir)


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
    # A token the pointer can reach: the sampled text differs in the last
    # float bits between hosts, and a newline's span has no width.
    token = next(t for t in browser.find_elements(*new)[3:]
                 if t.text.strip() and t.size["width"] > 0)
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
