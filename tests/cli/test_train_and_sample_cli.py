"""lm-jax-train then lm-jax-sample from the command line."""

import pytest

from lm_jax.cli import process

from conftest import run_module


@pytest.mark.slow
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
