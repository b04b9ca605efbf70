"""lm-jax-inspect (lm_jax/cli/inspect_run.py): a picture of what the model
computes over a prompt."""

import pytest

from conftest import png_size, run_command


@pytest.mark.slow
def test_inspect_command(smoke_run, tmp_path):
  out = tmp_path / "attention.png"
  done = run_command("lm_jax.cli.inspect_run", f"--workdir={smoke_run}",
                     "--prompt=LINE 3", f"--out={out}")
  assert done.returncode == 0, done.stderr
  assert png_size(out) == (2 * 250, 2 * 250)  # smoke: 2 heads, 2 layers
