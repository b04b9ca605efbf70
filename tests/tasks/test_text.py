"""The text task (lm_jax/tasks/text.py): it loads windows of a text,
evaluates and samples, and refuses a text shorter than a batch."""

import json

import jax
import numpy as np
import pytest

from lm_jax import tasks
from lm_jax.tasks import text
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.training import steps

from conftest import corpus_text, run_command


@pytest.mark.slow
def test_text_task_loads_windows_and_evaluates(smoke_config, text_file,
                                               tmp_path):
  smoke_config.data.path = str(text_file)
  task = tasks.task_for(smoke_config)
  loaded = task.load(smoke_config, tmp_path / "run")
  t = smoke_config.train
  assert loaded.val["x"].shape[1:] == (t.batch_size, t.seq_len)
  np.testing.assert_array_equal(loaded.val["x"][..., 1:],
                                loaded.val["y"][..., :-1])
  assert not (tmp_path / "run").exists()  # loading writes nothing
  model = make_model(smoke_config.model, loaded.tokenizer.vocab_size)
  state = steps.create_train_state(model, t, jax.random.key(0))
  record, lines, texts = task.evaluate(state.params, model, loaded, 7,
                                       smoke_config)
  assert record["step"] == 7 and record["val_ppl"] == pytest.approx(
      np.exp(record["val_loss"]))
  # An untrained model is near uniform over the vocabulary.
  assert record["val_loss"] == pytest.approx(
      np.log(loaded.tokenizer.vocab_size), rel=0.05)
  assert lines[0].startswith("eval step 7 | val loss")
  assert texts["sample"].startswith(t.sample_prompt)


def test_text_task_refuses_a_text_shorter_than_a_batch(smoke_config,
                                                       tmp_path):
  short = tmp_path / "short.txt"
  short.write_text("tiny\n" * 30, encoding="utf-8")
  smoke_config.data.path = str(short)
  smoke_config.data.val_fraction = 0.5
  with pytest.raises(UserError, match="fewer than one batch needs"):
    tasks.task_for(smoke_config).load(smoke_config, tmp_path / "run")




def test_perplexity_is_infinite_past_floats_range():
  """A huge but finite val loss (a far too high learning rate) is logged,
  not an OverflowError."""
  assert text.perplexity(1.0) == pytest.approx(np.e)
  assert text.perplexity(1e4) == float("inf")


@pytest.mark.slow
def test_a_jsonl_corpus_trains_and_a_second_run_reuses_its_cache(tmp_path):
  lines = corpus_text().splitlines(keepends=True)
  path = tmp_path / "c.jsonl"
  path.write_text("".join(json.dumps({"body": "".join(lines[i:i + 20])})
                          + "\n" for i in range(0, len(lines), 20)))
  args = ["--config=configs/char_tf.py:smoke", f"--config.data.path={path}",
          "--config.data.text_field=body", "--config.train.num_steps=2",
          "--config.train.eval_every=2", "--config.train.sample_tokens=0"]
  first = run_command("lm_jax.train", *args, f"--workdir={tmp_path}/a")
  assert first.returncode == 0, first.stderr[-2000:]
  assert "token cache: tokenized" in first.stdout
  assert "(20 documents, the last 2 as val)" in first.stdout
  second = run_command("lm_jax.train", *args, f"--workdir={tmp_path}/b")
  assert "token cache: reused" in second.stdout
  loss = lambda out: [l for l in out.splitlines() if l.startswith("eval")]
  assert loss(first.stdout) == loss(second.stdout)
