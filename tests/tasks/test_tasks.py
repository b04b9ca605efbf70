"""lm_jax/tasks: each model kind's task loads, evaluates and samples."""

import jax
import numpy as np
import pytest

from configs import echo_s2s
from lm_jax import tasks
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.tasks.base import bits_per_char
from lm_jax.training import steps


@pytest.mark.parametrize("kind, task", [
    ("transformer", tasks.TextTask), ("lstm", tasks.TextTask),
    ("gru", tasks.TextTask), ("transformer_s2s", tasks.PairsTask),
    ("lstm_s2s", tasks.PairsTask)])
def test_each_model_kind_has_its_task(smoke_config, kind, task):
  smoke_config.model.kind = kind
  assert isinstance(tasks.task_for(smoke_config), task)


def test_bits_per_char_spreads_the_total_over_the_characters():
  assert bits_per_char(np.log(2), 10, 5) == pytest.approx(2.0)


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


@pytest.mark.slow
def test_pairs_task_loads_padded_pairs_and_evaluates(tmp_path):
  config = echo_s2s.get_config("smoke")
  config.train.eval_pairs = 8
  task = tasks.task_for(config)
  loaded = task.load(config, tmp_path)
  src, tgt = loaded.train
  m = config.model
  assert src.shape[1] == m.max_source_len and tgt.shape[1] == (
      m.max_target_len + 2)
  model = make_model(config.model, loaded.tokenizer.vocab_size)
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  record, lines, _ = task.evaluate(state.params, model, loaded, 3, config)
  assert 0 <= record["val_token_accuracy"] <= 1
  assert record["val_exact_match"] == 0.0  # an untrained model
  assert "exact match" in lines[0]
