"""The commands on a run directory in use, damaged or odd: one line and exit 2,
or the fallback it says."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest

from lm_jax.loop import trainer
from lm_jax.runs import metrics, rundir
from lm_jax.training import steps
from lm_jax.views import plotting

from conftest import REPO, one_line_error, run_command




@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A corpus file and a 4-step smoke run trained on it."""
  d = tmp_path_factory.mktemp("robust2")
  (d / "good.txt").write_text("".join(
      f"LINE {i}: the quick brown fox jumps over the lazy dog.\n"
      for i in range(400)), encoding="utf-8")
  from configs import char_tf
  config = char_tf.get_config("smoke")
  config.data.path = str(d / "good.txt")
  config.train.update(num_steps=4, eval_every=4, log_every=2, sample_tokens=0)
  trainer.train_and_evaluate(config, d / "run")
  return d


def _train_args(run_dir, workdir, *flags: str) -> list[str]:
  return ["lm_jax.train", "--config=configs/char_tf.py:smoke",
          f"--config.data.path={run_dir}/good.txt", f"--workdir={workdir}",
          "--config.train.sample_tokens=0", "--config.train.cpu_devices=1",
          *flags]


def _truncate(checkpoint) -> None:
  """Cuts every array data file of a checkpoint folder to its first bytes,
  as a copy stopped early would. (Cutting only one may spare the
  parameters, which are all that sampling reads.)"""
  for data in checkpoint.rglob("ocdbt.process_0/d/*"):
    os.truncate(data, 64)


@pytest.fixture(scope="module")
def two_kept(run_dir):
  """The 4-step run trained on to step 6, whose val loss is made the worse:
  the latest (6) and the best (4) checkpoints are both kept."""
  from configs import char_tf
  config = char_tf.get_config("smoke")
  config.data.path = str(run_dir / "good.txt")
  config.train.update(num_steps=6, eval_every=4, log_every=2, sample_tokens=0)
  shutil.copytree(run_dir / "run", run_dir / "two")
  with mock.patch.object(steps, "evaluate", lambda *args: 99.0):
    trainer.train_and_evaluate(config, run_dir / "two")
  assert sorted(p.name for p in (run_dir / "two/checkpoints").iterdir()) == [
      "4", "6"]
  return run_dir / "two"


def _note(workdir, bad: int, used: int) -> re.Pattern:
  return re.compile(rf"note: the checkpoint {workdir}/checkpoints/{bad} "
                    rf"cannot be read \(.+\); using the checkpoint of step "
                    rf"{used}\n")


@pytest.mark.slow
def test_second_training_is_refused_while_sample_and_plot_work(run_dir,
                                                               tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run_dir / "run", workdir)  # resumed: it has a checkpoint
  log = (tmp_path / "first.log").open("w")
  # The first training in a process of its own: two processes share the run.
  first = subprocess.Popen(
      [sys.executable, "-m", *_train_args(run_dir, workdir,
                                          "--config.train.num_steps=100000",
                                          "--config.train.eval_every=100000")],
      cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 300
    # It prints the workdir once it holds the lock, before compiling.
    while "workdir: " not in (tmp_path / "first.log").read_text():
      assert first.poll() is None and time.monotonic() < deadline, (
          (tmp_path / "first.log").read_text())
      time.sleep(0.2)
    before = (workdir / metrics.METRICS_FILE).read_text()
    second = run_command(*_train_args(run_dir, workdir))
    one_line_error(second, f"{workdir} is in use by another training (PID "
                    f"{first.pid}); wait for it to end or stop it, or pass "
                    "another --workdir")
    assert (workdir / metrics.METRICS_FILE).read_text().startswith(before)
    # Reading a run that trains needs no lock.
    sample = run_command("lm_jax.sample", f"--workdir={workdir}",
                  "--max_new_tokens=8", "--prompt=LINE")
    assert sample.returncode == 0 and sample.stdout.startswith("LINE"), (
        sample.stderr)
    plot = run_command("lm_jax.cli.plot", f"--workdir={workdir}")
    assert plot.returncode == 0, plot.stderr
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
  # kill -9 leaves no stale lock.
  with rundir.lock(workdir):
    assert (workdir / rundir.LOCK_FILE).read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("flags, message", [
    (["--config.data.tokenizer=word", "--config.data.min_count=100000000"],
     "the vocabulary holds only <unk>: no token of the training text occurs "
     "config.data.min_count=100000000 times; lower config.data.min_count"),
    (["--config.train.sample_tokens=8", "--config.train.sample_prompt="],
     "config.train.sample_prompt='': the prompt has no tokens (only "
     "spaces?): give at least one word or character"),
    (["--config.train.sample_tokens=8", "--config.train.sample_prompt=L\u00e9"],
     "config.train.sample_prompt='L\u00e9': character(s) not in the model's "
     "vocabulary: '\u00e9'; remove them from the prompt (the vocabulary comes "
     "from the training text)"),
])
def test_vocabulary_and_sample_prompt_are_checked_first(flags, message,
                                                        run_dir, tmp_path):
  workdir = tmp_path / "run"
  one_line_error(run_command(*_train_args(run_dir, workdir, *flags)), message)
  assert not workdir.exists()


@pytest.mark.slow
def test_damaged_best_checkpoint_falls_back_for_sample(two_kept, tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(two_kept, workdir)
  _truncate(workdir / "checkpoints/4")
  sample = run_command("lm_jax.sample", f"--workdir={workdir}",
                       "--max_new_tokens=4")
  assert sample.returncode == 0, sample.stderr
  assert _note(workdir, 4, 6).fullmatch(sample.stderr), sample.stderr


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_for_resume(run_dir, two_kept,
                                                         tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(two_kept, workdir)
  _truncate(workdir / "checkpoints/6")
  resumed = run_command(*_train_args(run_dir, workdir,
                                     "--config.train.num_steps=6",
                                     "--config.train.eval_every=4"))
  assert resumed.returncode == 0, resumed.stderr
  assert _note(workdir, 6, 4).fullmatch(resumed.stderr), resumed.stderr
  assert "resuming from step 4" in resumed.stdout
  # The damaged folder is set aside, not deleted; step 6 is saved anew.
  names = {p.name for p in (workdir / "checkpoints").iterdir()}
  assert {"6", "6.damaged"} <= names


@pytest.mark.parametrize("damage, message", [
    ("truncated", "the checkpoint {w}/checkpoints/4 cannot be read "
     "(Encountered error while reading array index"),
    ("no _METADATA", "the checkpoint {w}/checkpoints/4 cannot be read "
     "(default/_METADATA is missing); train the run again\n"),
    ("no tokenizer.json", "{w}/tokenizer.json is missing: the run cannot map "
     "text to ids without it; restore it from a copy, or pass a new "
     "--workdir\n"),
    ("bad config.json", "{w}/config.json is damaged (not the JSON config a "
     "run writes); restore it from a copy, or pass a new --workdir\n"),
])
def test_damaged_run_directory_is_one_line_for_sample(damage, message,
                                                      run_dir, tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(run_dir / "run", workdir)
  if damage == "truncated":
    _truncate(workdir / "checkpoints/4")
  else:
    {"no _METADATA": workdir / "checkpoints/4/default/_METADATA",
     "no tokenizer.json": workdir / "tokenizer.json"}.get(
         damage, workdir / "nothing").unlink(missing_ok=True)
    if damage == "bad config.json":
      (workdir / "config.json").write_text('{"model": ')
  out = run_command("lm_jax.sample", f"--workdir={workdir}",
                    "--max_new_tokens=4")
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert out.stderr.startswith("error: " + message.format(w=workdir))


@pytest.mark.parametrize("flag, message", [
    ("--config.train.learning_rate=nan",
     "config.train.learning_rate is nan; set --config.train.learning_rate "
     "to a finite number"),
    ("--config.train.learning_rate=inf",
     "config.train.learning_rate is inf; set --config.train.learning_rate "
     "to a finite number"),
    ("--config.model.dropout=nan",
     "config.model.dropout is nan; set --config.model.dropout to a finite "
     "number"),
])
def test_nonfinite_setting_is_refused_before_any_write(flag, message,
                                                       run_dir, tmp_path):
  workdir = tmp_path / "run"
  out = run_command("lm_jax.train", "--config=configs/char_tf.py:smoke",
             f"--config.data.path={run_dir}/good.txt", f"--workdir={workdir}",
             flag)
  one_line_error(out, message)
  assert not workdir.exists()


@pytest.mark.parametrize("flag, message", [
    ("--temperature=nan", "--temperature must be a finite number, got nan"),
    ("--temperature=inf", "--temperature must be a finite number, got inf"),
    ("--top_p=nan", "--top_p must be a finite number, got nan"),
])
def test_nonfinite_sampling_option_is_refused(flag, message, run_dir):
  one_line_error(run_command("lm_jax.sample", f"--workdir={run_dir}/run", flag),
                  message)


def test_interactive_errors_name_the_commands(run_dir):
  out = run_command("lm_jax.sample", f"--workdir={run_dir}/run",
                    "--interactive",
                    stdin="/temp nan\n/len 0\n/topk -1\n/topp 2\n/quit\n")
  assert out.returncode == 0, out.stderr
  errors = [l.partition("error: ")[2] for l in out.stdout.splitlines()
            if "error: " in l]
  assert errors == ["/temp must be a finite number, got nan",
                    "/len must be positive, got 0",
                    "/topk must be >= 0 (0 turns it off), got -1",
                    "/topp must be in (0, 1], got 2.0"]
  assert "\ufffd" not in out.stdout and "Traceback" not in out.stderr


def test_torn_metrics_line_is_skipped_reported_and_cut(run_dir, tmp_path):
  workdir = tmp_path / "torn"
  shutil.copytree(run_dir / "run", workdir)
  path = workdir / metrics.METRICS_FILE
  whole = path.read_text()
  assert whole.endswith("\n")
  path.write_text(whole + '{"step": 6, "loss": 1.2')  # killed mid-line

  out = run_command("lm_jax.cli.plot", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr
  assert out.stderr == (f"note: {path}: skipped an incomplete last line "
                        f"(line {whole.count(chr(10)) + 1}, a run stopped or "
                        "still writing there)\n")
  assert (workdir / plotting.LOSS_PLOT).stat().st_size > 0
  assert [s for s, _ in plotting.read_curves(workdir).train] == [2, 4]

  # The next run's log cuts the fragment off before its first record.
  log = metrics.MetricsLog(workdir, resume_step=4)
  log.write(step=6, loss=1.0)
  log.close()
  assert path.read_text() == whole + '{"step": 6, "loss": 1.0}\n'
  assert metrics.read_records(path).note is None


def test_invalid_config_json_is_one_line_for_plot(run_dir, tmp_path):
  workdir = tmp_path / "badconfig"
  shutil.copytree(run_dir / "run", workdir)
  (workdir / "config.json").write_text('{"train": {"batch_')
  one_line_error(run_command("lm_jax.cli.plot", f"--workdir={workdir}"),
                  f"{workdir}/config.json is not a valid run config (JSON "
                  "with train.batch_size and train.seq_len); restore it from "
                  "a copy or plot another run")
