"""lm-jax-train then lm-jax-sample from the command line."""

import pytest

from lm_jax.cli import process

from conftest import run_command, run_module


@pytest.mark.slow
def test_command_line_train_and_sample(tmp_path, text_file):
  workdir = tmp_path / "cli"
  # Training in a process of its own: it splits the CPU into devices before
  # JAX starts, which this process has done.
  out = run_module("lm_jax.train", "--config=configs/char_tf.py:smoke",
                   f"--config.data.path={text_file}", f"--workdir={workdir}",
                   "--config.train.num_steps=8", "--config.train.eval_every=8")
  assert out.returncode == 0, out.stderr
  assert "eval step 8" in out.stdout and "sample" in out.stdout
  # One JAX device per core by default (the smoke batch of 8 splits evenly).
  assert f"devices: {process.cpu_device_count(0, 8)} x cpu" in out.stdout
  sample = ("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE",
            "--max_new_tokens=20", "--num_samples=2", "--seed=1")
  out = run_command(*sample)
  assert out.returncode == 0, out.stderr
  assert out.stdout.count("LINE") >= 2
  again = run_command(*sample)
  assert again.stdout == out.stdout  # same seed, same text
  bad = run_command("lm_jax.sample", f"--workdir={workdir}", "--prompt=LINE~")
  assert bad.returncode == 2 and "'~'" in bad.stderr
  assert "Traceback" not in bad.stderr
