"""lm_jax/runs/checkpoints.py under faults: a failed write, a left-over
temporary folder."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest

from lm_jax.loop import trainer
from lm_jax.runs import checkpoints, rundir

from conftest import REPO, train_args


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(dict(sample_tokens=0, **train))
  return smoke_config


TIMEOUT = 300  # seconds; the CI machine is small and shared


def _params(workdir, step=None):
  return rundir.load_run(workdir, step).params


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


# Runs the training command with writes past 20 kB failing (EFBIG), as on a
# full disk: a real failed write that works as root, where chmod does not.
LIMITED_WRITES = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, not the process
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
sys.argv = sys.argv[:1] + sys.argv[2:]
runpy.run_module("lm_jax.train", run_name="__main__", alter_sys=True)
"""


def test_leftover_temporary_checkpoint_is_ignored_and_removed(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=12, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  leftover = workdir / "checkpoints" / "8.orbax-checkpoint-tmp-1234"
  (leftover / "default").mkdir(parents=True)
  (leftover / "default" / "junk").write_bytes(b"\x00" * 100)
  assert rundir.load_run(workdir).step == 4  # sampling ignores it
  assert trainer.train_and_evaluate(config, workdir, stop_at=8)["step"] == 8
  assert not leftover.exists()


@pytest.mark.slow  # trains in a process of its own
def test_failed_checkpoint_write_is_one_line_and_keeps_earlier_ones(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=8, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  expected = _params(workdir, 4)
  # A process of its own: a failed write ends it without the interpreter's
  # teardown (os._exit), which is what this checks.
  args = train_args(text_file, workdir, num_steps=8, eval_every=4)
  args[1:3] = ["-c", LIMITED_WRITES, "lm_jax.train"]  # instead of -m lm_jax.train
  # Without a compilation cache, whose writes would fail too (empty: none).
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR="")
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                       timeout=TIMEOUT, env=env)
  assert out.returncode == 2
  # One line: no traceback from Orbax's writer threads.
  assert out.stderr == (
      f"error: could not save the checkpoint of step 8 in "
      f"{(workdir / 'checkpoints').absolute()}: File too large; the "
      "checkpoint of step 4 is intact; free space or fix the folder, then "
      "run the same command to resume\n")
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [4]
  # No val record for the checkpoint that was never saved.
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "val_loss" in r] == [4]
  _assert_same(_params(workdir, 4), expected)


def test_write_error_cause():
  import errno
  assert checkpoints.write_error_cause(
      OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == (
          "No space left on device")
  tensorstore = ValueError("OUT_OF_RANGE: Error writing \"x\": Failed to "
                           "write 9 bytes to file 7 [os_error_code='28']")
  assert checkpoints.write_error_cause(tensorstore) == "No space left on device"
  assert checkpoints.write_error_cause(ValueError("a shape mismatch")) is None
