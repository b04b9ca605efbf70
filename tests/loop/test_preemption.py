"""lm_jax/loop/preemption.py: SIGINT and SIGTERM save and stop; a resumed run is
bit for bit the unbroken one; kill -9 mid-save loses nothing."""

import os
import pathlib
import re
import shlex
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from lm_jax.loop import preemption, trainer
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import steps

from conftest import REPO, train_args


TIMEOUT = 300  # seconds; the CI machine is small and shared


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(dict(sample_tokens=0, **train))
  return smoke_config


class Run:
  """A training process whose stdout and stderr go to files we can poll."""

  def __init__(self, args: list[str], logs: pathlib.Path, cwd=REPO, **popen):
    logs.mkdir(exist_ok=True)
    self.out, self.err = logs / "stdout", logs / "stderr"
    with self.out.open("w") as out, self.err.open("w") as err:
      self.proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=err,
                                   **popen)

  def wait_for(self, pattern: str, stream: str = "out") -> re.Match:
    """Blocks until `pattern` appears in the process's output."""
    path = self.out if stream == "out" else self.err
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
      match = re.search(pattern, path.read_text(), re.MULTILINE)
      if match:
        return match
      if self.proc.poll() is not None:
        pytest.fail(f"exited {self.proc.returncode} before {pattern!r}:\n"
                    f"{self.err.read_text()}")
      time.sleep(0.01)
    self.proc.kill()
    pytest.fail(f"no {pattern!r} within {TIMEOUT} s")

  def finish(self) -> tuple[int, str]:
    return self.proc.wait(timeout=TIMEOUT), self.err.read_text()


def _params(workdir, step=None):
  return rundir.load_run(workdir, step).params


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


TMP_GLOB = "*.orbax-checkpoint-tmp*"


@pytest.mark.slow
def test_sigint_saves_and_the_resumed_run_is_bitwise_exact(
    tmp_path, text_file, smoke_config):
  """SIGINT, then the printed command, then SIGTERM: two real restarts that
  end with the same parameters as one uninterrupted run."""
  workdir = tmp_path / "run"
  # One CPU device, as the in-process run below: a device per core gives the
  # same parameters to float rounding, not bit for bit (test_parallel.py).
  first = Run(train_args(text_file, workdir, eval_every=100_000,
                          cpu_devices=1), tmp_path / "1")
  first.wait_for(r"^step \d+/")
  first.proc.send_signal(signal.SIGINT)
  rc, err = first.finish()
  assert rc == 128 + signal.SIGINT, err
  assert "Traceback" not in err
  stopped = re.search(r"stopped by SIGINT at step (\d+); checkpoint saved in "
                      r"(.+); resume with:\n  (.+)\n", err)
  assert stopped, err
  step1 = int(stopped[1])
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [step1]

  # Pasted in another directory (the shell's `exec` so the signal reaches
  # Python): the command changes to the directory the run started in.
  assert stopped[3].startswith(f"cd {shlex.quote(str(REPO))} && ")
  second = Run(["bash", "-c", stopped[3].replace(" && ", " && exec ", 1)],
               tmp_path / "2", cwd=tmp_path)
  second.wait_for(rf"^resuming from step {step1}$")
  second.wait_for(r"^step \d+/")
  second.proc.send_signal(signal.SIGTERM)
  rc, err = second.finish()
  assert rc == 128 + signal.SIGTERM, err
  step2 = int(re.search(r"stopped by SIGTERM at step (\d+)", err)[1])
  assert step2 > step1

  config = _config(smoke_config, text_file, num_steps=100_000,
                   eval_every=100_000)
  trainer.train_and_evaluate(config, tmp_path / "straight", stop_at=step2)
  _assert_same(_params(workdir, step2), _params(tmp_path / "straight", step2))


def test_first_signal_asks_to_stop_and_the_second_acts_at_once():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.StopOnSignal() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM
    # The next Ctrl-C or SIGTERM takes the default action: the process ends
    # at once, wherever it is.
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.slow
def test_second_sigint_leaves_the_last_checkpoint_intact(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  run = Run(train_args(text_file, workdir, eval_every=4), tmp_path / "logs")
  run.wait_for(r"^eval step \d+ ")
  run.proc.send_signal(signal.SIGINT)
  run.wait_for(r"^SIGINT: saving", stream="err")
  run.proc.send_signal(signal.SIGINT)
  rc, err = run.finish()
  # Killed by the second signal, or (if the save was already done) exited.
  assert rc in (-signal.SIGINT, 128 + signal.SIGINT), err
  assert "Traceback" not in err
  committed = checkpoints.manager(workdir, read_only=True).latest_step()
  assert committed is not None and bool(steps.all_finite(_params(workdir)))
  config = _config(smoke_config, text_file, num_steps=100_000, eval_every=4)
  result = trainer.train_and_evaluate(config, workdir, stop_at=committed + 4)
  assert result["step"] == committed + 4
  assert not list((workdir / "checkpoints").glob(TMP_GLOB))


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_save(tmp_path, text_file, smoke_config,
                                        capsys):
  workdir = tmp_path / "run"
  run = Run(train_args(text_file, workdir, eval_every=4), tmp_path / "logs")
  run.wait_for(r"^eval step \d+ ")  # one committed checkpoint
  deadline = time.monotonic() + TIMEOUT
  while not list((workdir / "checkpoints").glob(TMP_GLOB)):
    assert time.monotonic() < deadline and run.proc.poll() is None
    time.sleep(0.002)
  run.proc.kill()
  assert run.finish()[0] == -signal.SIGKILL
  assert list((workdir / "checkpoints").glob(TMP_GLOB))  # a save cut short
  committed = checkpoints.manager(workdir, read_only=True).latest_step()

  config = _config(smoke_config, text_file, num_steps=100_000, eval_every=4)
  capsys.readouterr()
  result = trainer.train_and_evaluate(config, workdir, stop_at=committed + 4)
  assert f"resuming from step {committed}\n" in capsys.readouterr().out
  assert result["step"] == committed + 4
  assert not list((workdir / "checkpoints").glob(TMP_GLOB))
