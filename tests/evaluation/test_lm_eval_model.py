"""lm-eval's `lm_jax` model (lm_jax/evaluation/lm_eval_model.py) on the
shipped plays cloze: its accuracy is direct scoring's, item for item; the
same task through lm-jax-serve with lm-eval's local-completions."""

import json
import sys
import types

import numpy as np
import pytest

from conftest import REPO
from lm_jax import config as config_lib
from lm_jax.data import corpus
from lm_jax.errors import UserError
from lm_jax.generation import sampling, scoring
from lm_jax.runs import rundir

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

from lm_jax.evaluation import lm_eval_model  # noqa: E402

TASKS = REPO / "experiments" / "eval_tasks"
sys.path.insert(0, str(TASKS / "plays_cloze"))
import plays  # noqa: E402


def request(*args):
  return types.SimpleNamespace(args=args)


def direct_predictions(run) -> list[int]:
  """Each item's choice by its own scoring: the continuation's summed
  log-probability after the context (the split lm-eval's hf model makes)."""
  encode = lambda text: run.tokenizer.encode(text).tolist()
  picks = []
  for item in map(json.loads, plays.ITEMS.read_text().splitlines()):
    context = encode(item["context"])
    pairs = [(context, encode(item["context"] + " " + c)[len(context):])
             for c in item["choices"]]
    scores = [s for s, _ in scoring.loglikelihoods(run.params, run.model,
                                                   pairs)]
    picks.append(int(np.argmax(scores)))
  return picks


def test_the_shipped_items_are_the_generators():
  val = corpus.load_corpus("", 0.1, config_lib.VAL_PLAYS).val
  shipped = [json.loads(l) for l in plays.ITEMS.read_text().splitlines()]
  assert shipped == plays.make_items(val)
  assert len(shipped) == 80 and all(len(i["choices"]) == 4 for i in shipped)


@pytest.mark.slow
def test_in_process_accuracy_is_direct_scorings_item_for_item(smoke_run):
  model = lm_eval_model.LMJaxModel(workdir=str(smoke_run), batch_size=8)
  out = lm_eval.simple_evaluate(
      model=model, tasks=["plays_cloze"], log_samples=True,
      task_manager=TaskManager(include_path=str(TASKS)))
  samples = sorted(out["samples"]["plays_cloze"], key=lambda s: s["doc_id"])
  adapter = [int(np.argmax([r[0] for r in s["filtered_resps"]]))
             for s in samples]
  direct = direct_predictions(model.run)
  assert adapter == direct
  labels = [s["doc"]["label"] for s in samples]
  assert out["results"]["plays_cloze"]["acc,none"] == pytest.approx(
      np.mean(np.asarray(direct) == labels))


def test_rolling_and_generation_use_scoring_and_the_decoder(smoke_run):
  model = lm_eval_model.LMJaxModel(workdir=str(smoke_run))
  run = model.run
  text = "LINE 3: the quick brown fox"
  ids = run.tokenizer.encode(text).tolist()
  [rolling] = model.loglikelihood_rolling([request(text)])
  want = scoring.score(run.params, run.model, [ids])[0].logprobs[1:].sum()
  assert rolling == pytest.approx(float(want), rel=1e-5)
  [generated] = model.generate_until([request("LINE 3: the", {
      "until": ["\n"], "max_gen_toks": 12})])
  import jax
  whole = sampling.generate_text(
      run.params, run.model, run.tokenizer,
      run.tokenizer.encode("LINE 3: the"), jax.random.key(0),
      sampling.SamplingOptions(max_new_tokens=12, temperature=0.0),
      stop="\n")[0]
  assert generated == whole.split("\n")[0] and "\n" not in generated
  # An empty continuation scores 0, greedy; the pair split is hf's.
  assert model.loglikelihood([request("LINE", "")]) == [(0.0, True)]
  assert model.encode_pair("LINE 3: ", "the") == (
      run.tokenizer.encode("LINE 3:").tolist(),
      run.tokenizer.encode(" the").tolist())


def test_a_masked_run_is_refused_in_one_line(masked_run):
  with pytest.raises(UserError, match="score a text") as e:
    lm_eval_model.LMJaxModel(workdir=str(masked_run))
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_local_completions_through_lm_jax_serve_equals_direct(smoke_run):
  """Waits on serve35 (echo with prompt log-probabilities, token-id
  prompts): lm-eval's local-completions against lm-jax-serve gives direct
  scoring's choice on every item."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "serve_conftest", REPO / "tests" / "serve" / "conftest.py")
  serve = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(serve)  # its `live` server
  run = rundir.load_run(smoke_run)
  with serve.live(run, max_tokens=200, max_batch=4, max_queue=64) as url:
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=dict(model="smoke", base_url=url + "/v1/completions",
                        tokenizer_backend="huggingface",
                        tokenizer=str(smoke_run), tokenized_requests=True,
                        num_concurrent=1, max_retries=1),
        tasks=["plays_cloze"], log_samples=True,
        task_manager=TaskManager(include_path=str(TASKS)))
  samples = sorted(out["samples"]["plays_cloze"], key=lambda s: s["doc_id"])
  served = [int(np.argmax([r[0] for r in s["filtered_resps"]]))
            for s in samples]
  assert served == direct_predictions(run)


@pytest.mark.slow
def test_the_table_command_scores_runs_and_shows_a_refusal(smoke_run,
                                                            masked_run):
  sys.path.insert(0, str(REPO))
  from experiments import eval_table
  rows = [eval_table.row(str(smoke_run), limit=4),
          eval_table.row(str(masked_run), limit=4)]
  assert rows[0]["items"] == 4 and 0 <= float(rows[0]["acc"]) <= 1
  assert rows[1]["acc"].startswith("refused:") and "score a text" in \
      rows[1]["acc"]
  assert eval_table.table(rows).count("\n") == 4
