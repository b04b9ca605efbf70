"""End to end: train the smoke config, resume it, sample from it."""

import json

import jax
import numpy as np
import pytest

from lm_jax.cli import process
from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.runs import rundir
from lm_jax.training import optimizers, steps

from conftest import run_module


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(train)
  return smoke_config


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


def test_loss_decreases(smoke_config, text_file, tmp_path):
  config = _config(smoke_config, text_file, num_steps=60, eval_every=60,
                   log_every=20, sample_tokens=0, learning_rate=3e-3)
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  # Uniform guessing over the vocabulary costs log(V) nats.
  vocab = len(json.loads((tmp_path / "run/tokenizer.json").read_text())["vocab"])
  assert result["val_loss"] < 0.75 * np.log(vocab)


def test_mismatched_resume_is_refused(smoke_config, text_file, tmp_path):
  config = _config(smoke_config, text_file, num_steps=4, eval_every=4,
                   sample_tokens=0)
  trainer.train_and_evaluate(config, tmp_path / "run")
  config.model.d_model = 64
  with pytest.raises(UserError, match="model.d_model: stored 32, requested 64"):
    trainer.train_and_evaluate(config, tmp_path / "run")


def test_lr_schedule_and_decay_mask(smoke_config):
  t = smoke_config.train
  t.num_steps, t.warmup_steps, t.learning_rate = 100, 10, 1e-3
  lr = optimizers.lr_schedule(t)
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(100)) == pytest.approx(1e-3 * t.min_lr_ratio)


def test_command_line_train_and_sample(tmp_path, text_file):
  workdir = tmp_path / "cli"
  run = run_module
  out = run("lm_jax.train", "--config=configs/char_tf.py:smoke",
            f"--config.data.path={text_file}", f"--workdir={workdir}",
            "--config.train.num_steps=8", "--config.train.eval_every=8")
  assert out.returncode == 0, out.stderr
  assert "eval step 8" in out.stdout and "sample" in out.stdout
  # One JAX device per core by default (the smoke batch of 8 splits evenly).
  assert f"devices: {process.cpu_device_count(0, 8)} x cpu" in out.stdout
  out = run("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE",
            "--max_new_tokens=20", "--num_samples=2", "--seed=1")
  assert out.returncode == 0, out.stderr
  assert out.stdout.count("LINE") >= 2
  again = run("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE",
              "--max_new_tokens=20", "--num_samples=2", "--seed=1")
  assert again.stdout == out.stdout  # same seed, same text
  bad = run("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE~")
  assert bad.returncode == 2 and "'~'" in bad.stderr
  assert "Traceback" not in bad.stderr
