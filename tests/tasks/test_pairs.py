"""The pairs task (lm_jax/tasks/pairs.py): it loads padded pairs and
evaluates their token accuracy and exact match."""

import jax
import pytest

from configs import echo_s2s
from lm_jax import tasks
from lm_jax.models import make_model
from lm_jax.training import steps


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
