"""lm_jax/runs/rundir.py: check_resumable through a real run: every changed
setting is named."""

import pathlib

import pytest

from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.runs import rundir


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(dict(sample_tokens=0, **train))
  return smoke_config


def _snapshot(directory: pathlib.Path) -> dict:
  """Every file under `directory` with its size and modification time."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(directory.rglob("*"))}


def test_resume_with_other_settings_lists_every_difference(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=4, eval_every=4)
  trainer.train_and_evaluate(config, workdir)
  before = _snapshot(workdir)
  other_text = tmp_path / "other.txt"
  # New characters at the start: the vocabulary comes from the training part.
  other_text.write_text("café ü\n" + text_file.read_text(), encoding="utf-8")
  config.data.path = str(other_text)
  config.model.num_layers = 3
  config.train.seq_len = 16
  with pytest.raises(UserError) as e:
    trainer.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "model.num_layers: stored 2, requested 3" in message
  assert "train.seq_len: stored 32, requested 16" in message
  stored_vocab = rundir.read_tokenizer(workdir).vocab_size
  assert (f"vocabulary: stored {stored_vocab} tokens, requested "
          f"{stored_vocab + 2} (new 'é', 'ü')") in message
  assert _snapshot(workdir) == before
  # Sampling builds the model from the stored settings.
  stored_config = rundir.load_run(workdir).config
  assert stored_config.model.num_layers == 2
