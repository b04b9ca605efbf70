"""What a run prints: phases, step lines, the summary; the GPU warning."""

import json
import os
import re

import pytest

from lm_jax.loop import trainer
from lm_jax.views import progress


def test_step_line_has_no_rate_or_eta_before_a_timed_chunk():
  record = dict(loss=2.5, lr=1e-3, grad_norm=0.5, tokens_per_s=12345.6)
  assert progress.step_line(4, 20, record, 65.2, None) == (
      "step 4/20 | loss 2.5000 | lr 1.00e-03 | grad norm 0.500 | "
      "elapsed 1m05s")
  assert progress.step_line(8, 20, record, 70, 0.5) == (
      "step 8/20 | loss 2.5000 | lr 1.00e-03 | grad norm 0.500 | "
      "12,346 tok/s | elapsed 1m10s | ETA 0m24s")
  # A budget of training seconds that ends the run sooner: its seconds left.
  assert progress.step_line(8, 20, dict(record, train_s=50.0), 70, 0.5,
                            budget=60.0).endswith("ETA 0m10s")


def test_summary_names_the_best_evaluation(tmp_path):
  records = [dict(step=4, loss=3.0), dict(step=5, val_loss=2.5, val_bpc=3.6),
             dict(step=10, val_loss=2.1, val_bpc=3.0),
             dict(step=15, val_loss=2.2, val_bpc=3.2)]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))
  assert progress.run_summary(tmp_path, 15, 15, 256, 3725.0) == (
      "done: step 15/15 in 1h02m | best val loss 2.1000 nats/token "
      "(3.0000 bpc) at step 10 | 3,840 tokens seen")
  assert progress.run_summary(tmp_path / "none", 0, 15, 256, None) == (
      "done: step 0/15 | no evaluation yet | 0 tokens seen")


@pytest.mark.slow
def test_a_run_says_what_it_does_and_a_finished_one_that_it_is_done(
    smoke_config, text_file, tmp_path, capsys):
  config = smoke_config
  config.data.path = str(text_file)
  config.train.update(num_steps=8, eval_every=8, sample_tokens=0)
  trainer.train_and_evaluate(config, tmp_path / "run")
  lines = capsys.readouterr().out.splitlines()
  phases = [l for l in lines if l.endswith(" ...")]
  assert phases == ["loading the corpus ...", "compiling the train step ...",
                    "evaluating ..."]
  steps = [l for l in lines if l.startswith("step ")]
  assert len(steps) == 2 and "ETA" not in steps[0] and "tok/s" not in steps[0]
  assert re.search(r"tok/s \| elapsed \dm\d\ds \| ETA 0m\d\ds$", steps[1])
  assert re.fullmatch(r"done: step 8/8 in \dm\d\ds \| best val loss [\d.]+ "
                      r"nats/token \([\d.]+ bpc\) at step 8 \| 2,048 tokens "
                      "seen", lines[-1])
  records = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert ["tokens_per_s" in r for r in records if "loss" in r] == [False, True]

  trainer.train_and_evaluate(config, tmp_path / "run")
  lines = capsys.readouterr().out.splitlines()
  assert ("already complete at step 8 (config.train.num_steps=8); raise it "
          "to train further, e.g. --config.train.num_steps=16") in lines
  assert lines[-1].startswith("done: step 8/8 | best val loss")
  assert not [l for l in lines if l.startswith(("step ", "compiling"))]


def test_gpu_warning_when_nvidia_smi_works_but_jax_sees_the_cpu(
    tmp_path, monkeypatch):
  fake = tmp_path / "nvidia-smi"
  fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  assert progress.gpu_warning("cpu") == (
      "warning: nvidia-smi sees a GPU but JAX uses only the CPU; install the "
      'CUDA wheels with pip install ".[gpu]" (docs/GPU.md)')
  assert progress.gpu_warning("gpu") is None
  fake.write_text("#!/bin/sh\nexit 9\n")  # a driver that does not answer
  assert progress.gpu_warning("cpu") is None
