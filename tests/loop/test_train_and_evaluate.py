"""End to end: train the smoke config, resume it, sample from it."""

import json
import jax
import numpy as np
import pytest
from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.runs import rundir


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(train)
  return smoke_config


@pytest.mark.slow
def test_train_resume_and_files(smoke_config, text_file, tmp_path):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=20, sample_tokens=0)
  first = trainer.train_and_evaluate(config, workdir, stop_at=10)
  assert first["step"] == 10 and np.isfinite(first["val_loss"])
  assert first["val_bpc"] == pytest.approx(first["val_loss"] / np.log(2))
  for name in ("config.json", "tokenizer.json", "metrics.jsonl"):
    assert (workdir / name).is_file()
  assert json.loads((workdir / "config.json").read_text())["model"][
      "num_layers"] == 2

  # The same command again resumes at 10 and continues to 20.
  second = trainer.train_and_evaluate(config, workdir)
  assert second["step"] == 20
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  train_steps = [r["step"] for r in records if "loss" in r]
  assert train_steps == [4, 8, 10, 12, 16, 20]
  assert [r["step"] for r in records if "val_loss" in r] == [10, 20]

  # Resume equals uninterrupted: train 20 steps in one go elsewhere.
  straight = trainer.train_and_evaluate(config, tmp_path / "straight")
  assert straight["val_loss"] == second["val_loss"]
  a = rundir.load_run(workdir, 20).params
  b = rundir.load_run(tmp_path / "straight", 20).params
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_loss_decreases(smoke_config, text_file, tmp_path):
  config = _config(smoke_config, text_file, num_steps=60, eval_every=60,
                   log_every=20, sample_tokens=0, learning_rate=3e-3)
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  # Uniform guessing over the vocabulary costs log(V) nats.
  vocab = rundir.read_tokenizer(tmp_path / "run").vocab_size
  assert result["val_loss"] < 0.75 * np.log(vocab)


def test_mismatched_resume_is_refused(smoke_config, text_file, tmp_path):
  config = _config(smoke_config, text_file, num_steps=4, eval_every=4,
                   sample_tokens=0)
  trainer.train_and_evaluate(config, tmp_path / "run")
  config.model.d_model = 64
  with pytest.raises(UserError, match="model.d_model: stored 32, requested 64"):
    trainer.train_and_evaluate(config, tmp_path / "run")
