"""lm-jax-plot (lm_jax/cli/plot.py): one run or several into a PNG."""

import pytest

from conftest import png_size, run_command


@pytest.mark.slow
def test_plot_command(smoke_run, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  for name in ("config.json", "metrics.jsonl"):
    (other / name).write_text((smoke_run / name).read_text())
  out = tmp_path / "both.png"
  done = run_command("lm_jax.cli.plot", f"--workdir={smoke_run}", str(other),
                     f"--out={out}")
  assert done.returncode == 0, done.stderr
  assert png_size(out) == (1200, 450)
  bad = run_command("lm_jax.cli.plot", f"--workdir={tmp_path / 'none'}")
  assert bad.returncode == 2
  assert bad.stderr.startswith("error: ") and "metrics.jsonl" in bad.stderr
