"""lm-jax-sweep (lm_jax/cli/sweep.py): a grid of settings from its flags;
the plan shown without training, bad input one line."""

import pytest

from lm_jax.cli import sweep

from conftest import REPO, run_command


def test_show_prints_the_plan_and_trains_nothing(capsys, tmp_path):
  argv = ["--config=char_tf:smoke", f"--workdir={tmp_path / 's'}",
          "--set=seed=0,1,2", "--show"]
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  assert "3 members in 1 group(s)" in out and "members differ in: seed" in out
  assert not (tmp_path / "s").exists()
  # Called again with one seed: nothing left of the last call's three.
  assert sweep.main(argv[:2] + ["--set=seed=4", "--show"]) == 0
  assert "1 members in 1 group(s)" in capsys.readouterr().out


def test_a_missing_workdir_is_one_line(capsys):
  assert sweep.main(["--config=char_tf:smoke", "--set=seed=0,1"]) == 2
  assert capsys.readouterr().err == (
      "error: --workdir is required: the folder the members' runs and the "
      "results go to, e.g. --workdir=sweeps/lr\n")


def run_cli(*args, cwd=REPO):
  return run_command("lm_jax.cli.sweep", *args, cwd=cwd)


@pytest.mark.slow
def test_cli_show_and_bad_input_write_nothing(tmp_path):
  out = run_cli("--config=char_tf:smoke", f"--workdir={tmp_path / 's'}",
                "--set=train.learning_rate=1e-3,3e-3", "--set=seed=0,1",
                "--show")
  assert out.returncode == 0, out.stderr
  assert "4 members in 1 group(s)" in out.stdout
  assert "2 per device" in out.stdout or "4 per device" in out.stdout
  huge = run_cli("--config=char_tf:smoke", f"--workdir={tmp_path / 's'}",
                 "--set=model.d_model=32768,65536")
  assert huge.returncode == 2
  assert huge.stderr.strip().count("\n") == 0
  assert "needs about" in huge.stderr
  assert not (tmp_path / "s").exists()
