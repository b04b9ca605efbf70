"""The request shapes clients send to lm-jax-serve (lm_jax/serve/api.py,
app.py), through the official `openai` client: echo with the prompt
scored (lm-eval's loglikelihood request), prompts as lists of strings or
token ids, message content as parts, usage chunks, logit_bias and the
penalties, fields refused by name, model names, /tokenize, /detokenize."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import openai
import pytest

from lm_jax.generation import sampling, scoring

from serve.conftest import PROMPT, client, live, post

# A live server in every test: the full suite only.
pytestmark = pytest.mark.slow

CONTEXT = "LINE 7: the quick"
CHOICES = (" brown", " fox", " lazy", " dog")  # a 4-choice cloze item


def _item(run):
  """lm-eval's tokenized requests: context + continuation ids, and ctxlen."""
  ctx = [int(t) for t in run.tokenizer.encode(CONTEXT)]
  return [ctx + [int(t) for t in run.tokenizer.encode(c)]
          for c in CHOICES], len(ctx)


def _parse_logprobs(choice, ctxlen, drop_last):
  """lm-eval 0.4.13's local-completions `parse_logprobs`: the summed
  continuation log-probability and whether each token is the greedy one
  (it reads [ctxlen:-1]: the last token is the one generated)."""
  end = -1 if drop_last else None
  lps = choice.logprobs.token_logprobs[ctxlen:end]
  tops = choice.logprobs.top_logprobs[ctxlen:end]
  greedy = all(lp == max(top.values()) for lp, top in zip(lps, tops))
  return sum(lps), greedy


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_lm_evals_loglikelihood_request_gets_the_in_process_scores(
    run, server, max_tokens):
  prompts, ctxlen = _item(run)
  got = client(server).completions.create(
      model="anything", prompt=prompts, echo=True, logprobs=1,
      max_tokens=max_tokens, temperature=0, seed=1234)
  want = scoring.score(run.params, run.model, prompts, top=1)
  pairs = [(p[:ctxlen], p[ctxlen:]) for p in prompts]
  sums = scoring.loglikelihoods(run.params, run.model, pairs)
  assert [c.index for c in got.choices] == [0, 1, 2, 3]
  for choice, prompt, s, (total, greedy) in zip(got.choices, prompts, want,
                                                sums):
    lp = choice.logprobs
    assert len(lp.tokens) == len(prompt) + max_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:len(prompt)] == [float(x)
                                                for x in s.logprobs[1:]]
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:k]))
                              for k in range(len(lp.tokens))]
    assert choice.text.startswith(CONTEXT)
    assert _parse_logprobs(choice, ctxlen, drop_last=max_tokens == 1) == (
        pytest.approx(total, rel=1e-9, abs=1e-9), greedy)
  assert got.usage.prompt_tokens == sum(len(p) for p in prompts)
  assert got.usage.completion_tokens == 4 * max_tokens
  if max_tokens:  # the one token, from the scoring pass, is the engine's
    alone = client(server).completions.create(
        model="smoke", prompt=prompts, max_tokens=1, temperature=0.7,
        seed=1234, logprobs=1)
    echoed = client(server).completions.create(
        model="smoke", prompt=prompts, max_tokens=1, temperature=0.7,
        seed=1234, logprobs=1, echo=True)
    for a, e in zip(alone.choices, echoed.choices):
      assert e.text.endswith(a.text) and e.logprobs.tokens[-1] == a.text
      assert e.logprobs.token_logprobs[-1] == pytest.approx(
          a.logprobs.token_logprobs[0], abs=1e-5)


def test_echo_streams_the_prompt_first_and_ends_with_usage(server):
  c = client(server)
  whole = c.completions.create(model="smoke", prompt=PROMPT, echo=True,
                               logprobs=2, max_tokens=5, seed=3)
  chunks = list(c.completions.create(
      model="smoke", prompt=PROMPT, echo=True, logprobs=2, max_tokens=5,
      seed=3, stream=True, stream_options={"include_usage": True}))
  assert chunks[0].choices[0].text == PROMPT
  assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == len(
      PROMPT) + 5
  assert "".join(ch.choices[0].text for ch in chunks[:-1]) == (
      whole.choices[0].text)
  offsets = [o for ch in chunks[:-1] for o in ch.choices[0].logprobs.text_offset]
  assert offsets == whole.choices[0].logprobs.text_offset
  chat = list(c.chat.completions.create(
      model="smoke", messages=[{"role": "user", "content": "the fox"}],
      max_tokens=3, stream=True, stream_options={"include_usage": True}))
  assert chat[-1].usage.completion_tokens <= 3 and not chat[-1].choices


def test_a_list_of_prompts_gets_n_choices_each_in_order(run, server):
  c = client(server)
  texts = [PROMPT, "LINE 2: a"]
  alone = [c.completions.create(model="smoke", prompt=t, max_tokens=6, n=2,
                                seed=9) for t in texts]
  ids = [[int(i) for i in run.tokenizer.encode(t)] for t in texts]
  for prompt in (texts, ids):
    both = c.completions.create(model="smoke", prompt=prompt, max_tokens=6,
                                n=2, seed=9)
    assert [ch.index for ch in both.choices] == [0, 1, 2, 3]
    assert [ch.text for ch in both.choices] == [
        ch.text for a in alone for ch in a.choices]
  one = c.completions.create(model="smoke", prompt=ids[0], max_tokens=6,
                             n=2, seed=9)
  assert [ch.text for ch in one.choices] == [
      ch.text for ch in alone[0].choices]


def test_message_content_as_text_parts_equals_a_string(server):
  c = client(server)
  ask = lambda content: c.chat.completions.create(
      model="smoke", messages=[{"role": "user", "content": content}],
      max_tokens=8, temperature=0).choices[0].message.content
  assert ask([{"type": "text", "text": "the "},
              {"type": "text", "text": "fox"}]) == ask("the fox")
  with pytest.raises(openai.BadRequestError) as e:
    ask([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])
  assert e.value.param == "messages[0].content"


def test_logit_bias_and_penalties_change_the_sampling(run, server):
  c = client(server)
  greedy = lambda **kw: c.completions.create(
      model="smoke", prompt=[[int(i) for i in run.tokenizer.encode(PROMPT)]],
      max_tokens=20, temperature=0, **kw).choices[0].text
  plain = greedy()
  first = int(run.tokenizer.encode(plain[0])[0])
  assert plain[0] not in greedy(logit_bias={str(first): -100})
  assert set(greedy(logit_bias={str(first): 100})) == {plain[0]}
  # The penalties as lm-jax-sample's decoder applies them.
  options = sampling.SamplingOptions(max_new_tokens=20, temperature=0,
                                     presence_penalty=1.5,
                                     frequency_penalty=0.5)
  want = sampling.generate(run.params, run.model, jnp.asarray(
      [run.tokenizer.encode(PROMPT)]), jax.random.key(0), options)
  got = greedy(presence_penalty=1.5, frequency_penalty=0.5)
  assert got == run.tokenizer.decode(np.asarray(want[0]))
  assert got != plain
  with pytest.raises(openai.BadRequestError, match="presence_penalty"):
    greedy(presence_penalty=3)
  with pytest.raises(openai.BadRequestError, match="logit_bias"):
    greedy(logit_bias={str(run.model.vocab_size): 1})


@pytest.mark.parametrize("field, value", [
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "required"),
    ("response_format", {"type": "json_object"}),
    ("functions", [{"name": "f"}])])
def test_a_field_the_server_cannot_honour_is_refused_by_name(server, field,
                                                            value):
  with pytest.raises(openai.BadRequestError) as e:
    client(server).chat.completions.create(
        model="smoke", messages=[{"role": "user", "content": "the"}],
        max_tokens=2, extra_body={field: value})
  assert e.value.param == field and field in e.value.message
  assert e.value.code == "unsupported_parameter"


def test_bad_values_are_400_and_best_of_above_n_is_refused(server):
  c = client(server)
  with pytest.raises(openai.BadRequestError) as e:
    c.completions.create(model="smoke", prompt=PROMPT, best_of=3)
  assert e.value.param == "best_of"
  ok = c.completions.create(model="smoke", prompt=PROMPT, best_of=2, n=2,
                            max_tokens=2)
  assert len(ok.choices) == 2
  for body in ({"max_tokens": "many"}, {"prompt": [1, "a"]},
               {"prompt": [[1], []]}, {"echo": "yes"}):
    with pytest.raises(openai.BadRequestError) as e:
      c.completions.create(model="smoke", prompt=PROMPT, extra_body=body)
    assert e.value.status_code == 400
  with pytest.raises(openai.BadRequestError, match="'max_tokens'"):
    c.completions.create(model="smoke", prompt=PROMPT, max_tokens=0)
  status, body = post(server, "/v1/completions", b"[1, 2]")
  assert status == 400 and body["error"]["type"] == "invalid_request_error"
  status, body = post(server, "/v1/no/such/route", b"{}")
  assert status == 404 and set(body["error"]) == {"message", "type", "param",
                                                  "code"}


def test_another_model_name_is_served_unless_strict(run, server):
  got = client(server).completions.create(model="gpt-3.5-turbo",
                                          prompt=PROMPT, max_tokens=2)
  assert got.model == "smoke"
  with live(run, strict_model_name=True) as url:
    with pytest.raises(openai.NotFoundError) as e:
      client(url).completions.create(model="gpt-3.5-turbo", prompt=PROMPT,
                                     max_tokens=2)
  assert e.value.code == "model_not_found"


def test_tokenize_and_detokenize_in_vllms_shape(run, server):
  status, got = post(server, "/tokenize", b'{"prompt": "LINE 3: the fox"}')
  ids = [int(i) for i in run.tokenizer.encode("LINE 3: the fox")]
  assert status == 200 and got == {"tokens": ids, "count": len(ids),
                                   "max_model_len": 32}
  status, got = post(server, "/detokenize",
                     json.dumps({"tokens": ids}).encode())
  assert status == 200 and got == {"prompt": "LINE 3: the fox"}
  status, got = post(server, "/detokenize", b'{"tokens": [-1]}')
  assert status == 400 and got["error"]["param"] == "tokens"
