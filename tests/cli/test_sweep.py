"""lm-jax-sweep (lm_jax/cli/sweep.py): a grid of settings from its flags;
the plan shown without training, bad input one line."""

import errno
import json
from unittest import mock

import pytest

from lm_jax.cli import sweep

from conftest import REPO, refused, run_command


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


# Stops at any moment leave a sweep the same command continues.

def _tiny(workdir, *sets):
  return ["--config=char_tf:smoke", f"--workdir={workdir}",
          "--config.train.num_steps=8", "--config.train.log_every=4",
          "--config.train.eval_every=4", "--config.train.sample_tokens=0",
          *(f"--set={s}" for s in sets)]


def _saved(member) -> list[str]:
  return sorted(p.name for p in (member / "checkpoints").iterdir())


def _failing_save(n: int, error: BaseException):
  """checkpoints.save that raises `error` at its n-th call."""
  from lm_jax.runs import checkpoints
  real, calls = checkpoints.save, []

  def save(*args, **kwargs):
    calls.append(1)
    if len(calls) == n:
      raise error
    return real(*args, **kwargs)
  return mock.patch.object(checkpoints, "save", save)


@pytest.mark.slow
def test_a_sweep_stopped_while_saving_continues_and_grows(tmp_path):
  """A second Ctrl-C while the members are saved (one saved, one not), a
  torn metrics line and an unfinished checkpoint folder: the same command
  continues; a seed added to the finished sweep trains alone."""
  w = tmp_path / "s"
  with _failing_save(2, KeyboardInterrupt()):
    out = run_cli(*_tiny(w, "seed=0,1"))
  assert out.returncode == 130 and "Traceback" not in out.stderr
  assert _saved(w / "seed=0") == ["4"]
  (w / "seed=1" / "checkpoints" / "4.orbax-checkpoint-tmp-7").mkdir(
      parents=True)
  with open(w / "seed=0" / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "lo')
  out = run_cli(*_tiny(w, "seed=0,1"))
  assert out.returncode == 0, out.stderr
  assert "1 member(s) resume from step 4: seed=0" in out.stdout
  assert "1 member(s) start: seed=1" in out.stdout
  assert _saved(w / "seed=0") == _saved(w / "seed=1") == ["8"]
  before = (w / "seed=0" / "checkpoints" / "8").stat().st_mtime_ns
  out = run_cli(*_tiny(w, "seed=0,1,2"))
  assert out.returncode == 0, out.stderr
  assert "2 member(s) already complete at step 8: seed=0, seed=1" in (
      out.stdout)
  assert "1 member(s) start: seed=2" in out.stdout
  assert _saved(w / "seed=2") == ["8"]
  assert (w / "seed=0" / "checkpoints" / "8").stat().st_mtime_ns == before
  assert len(json.loads((w / "results.json").read_text())["members"]) == 3


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_sweep_continues(tmp_path):
  w = tmp_path / "s"
  full = OSError(errno.ENOSPC, "No space left on device",
                 str(w / "seed=1" / "checkpoints"))
  with _failing_save(2, full):
    out = run_cli(*_tiny(w, "seed=0,1"))
  refused(out, "could not write", "No space left on device",
          "run the same command to continue")
  assert _saved(w / "seed=0") == ["4"]
  out = run_cli(*_tiny(w, "seed=0,1"))
  assert out.returncode == 0, out.stderr
  assert _saved(w / "seed=0") == _saved(w / "seed=1") == ["8"]


def test_colliding_member_folders_are_refused_before_training(tmp_path):
  (tmp_path / "a").mkdir()
  for path in (tmp_path / "a" / "c.txt", tmp_path / "a-c.txt"):
    path.write_text("some text to train on\n" * 200)
  w = tmp_path / "s"
  out = run_cli(*_tiny(w, f"data.path={tmp_path}/a/c.txt,{tmp_path}/a-c.txt"))
  line = refused(out, f"data.path={tmp_path}/a/c.txt and "
                 f"data.path={tmp_path}/a-c.txt", "would share")
  assert "separate --workdir" in line
  assert not w.exists()


def test_a_member_folder_name_too_long_is_refused(tmp_path):
  long = tmp_path / ("x" * 240 + ".txt")
  long.write_text("some text to train on\n" * 200)
  out = run_cli(*_tiny(tmp_path / "s", f"data.path={long},{long}2"))
  refused(out, "folder name is", "more than the 255")
