"""Several processes for real: two `python -m lm_jax.train` processes of one
device each join through `jax.distributed.initialize` on a localhost
coordinator (CPU collectives through gloo), as two hosts would
(docs/MULTIHOST.md).

Started together with a one-process run on two devices, the reference: the
same global batch split the same way, so the same losses.
"""

import json
import os
import socket

import pytest
import subprocess
import sys

import jax
import numpy as np

from lm_jax.runs import metrics, rundir

from conftest import REPO, assert_scaled_close

TIMEOUT = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train(text_file, workdir, cpu_devices: int, log, env=None):
  args = [sys.executable, "-m", "lm_jax.train",
          "--config=configs/char_tf.py:smoke",
          f"--config.data.path={text_file}", f"--workdir={workdir}",
          f"--config.train.cpu_devices={cpu_devices}",
          "--config.train.num_steps=4", "--config.train.eval_every=4",
          "--config.train.sample_tokens=0"]
  return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, JAX_PLATFORMS="cpu",
                                              **(env or {})))


def _records(workdir) -> list[dict]:
  records, note = metrics.read_records(workdir / metrics.METRICS_FILE)
  assert note is None
  timings = ("tokens_per_s", "elapsed_s", "eval_s", "train_s")  # not results
  return [{k: v for k, v in r.items() if k not in timings} for r in records]


@pytest.mark.slow
def test_two_processes_train_as_one_with_two_devices(tmp_path, text_file):
  coordinator = f"localhost:{_free_port()}"
  job, single = tmp_path / "job", tmp_path / "single"
  logs = [(tmp_path / f"log{i}").open("w") for i in range(3)]
  procs = [_train(text_file, job, 1, logs[i], {
      "JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  procs.append(_train(text_file, single, 2, logs[2]))
  for proc, log in zip(procs, logs):
    proc.wait(timeout=TIMEOUT)
    log.close()
  outs = [(tmp_path / f"log{i}").read_text() for i in range(3)]
  for proc, out in zip(procs, outs):
    assert proc.returncode == 0, out[-3000:]
  for out in outs:
    assert "devices: 2 x cpu" in out

  # The same losses, logged once: only process 0 wrote the run's files.
  assert _records(job) == _records(single)
  assert [r["step"] for r in _records(job)] == [4, 4]
  assert "loss plot:" in outs[0] and "loss plot:" not in outs[1]
  written = sorted(p.name for p in job.iterdir())
  assert len([n for n in written if n.startswith("events.out")]) == 1
  assert {rundir.CONFIG_FILE, rundir.TOKENIZER_FILE, "loss.png",
          metrics.METRICS_FILE, "checkpoints"} <= set(written)

  # The job's checkpoint restores on one process with one device.
  assert jax.device_count() == 1
  run, reference = rundir.load_run(job), rundir.load_run(single)
  assert run.step == reference.step == 4
  # Two processes' all-reduce sums the gradients in another order than one
  # process's two devices: see assert_scaled_close.
  assert_scaled_close(run.params, reference.params, rel=1e-6)
  assert json.loads((job / rundir.CONFIG_FILE).read_text())["train"][
      "cpu_devices"] == 1
