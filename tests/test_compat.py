"""Checkpoints written by earlier code still restore and resume bit for bit.

The fixtures (tests/fixtures/ckpt_*, written by make_checkpoints.py at the
commit its docstring names) hold a run stopped at step 4 of 8 in each
checkpoint layout, and what that code did from there to step 8.
"""

import json
import shutil

import ml_collections
import pytest

from lm_jax import rundir, trainer

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"

import sys
sys.path.insert(0, str(FIXTURES))
import make_checkpoints  # noqa: E402


@pytest.mark.parametrize("layout", ["plain", "carry"])
def test_old_checkpoint_resumes_bitwise(layout, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURES / f"ckpt_{layout}", workdir)
  expected = json.loads((workdir / "expected.json").read_text())
  config = ml_collections.ConfigDict(
      json.loads((workdir / "config.json").read_text()))
  config.data.path = str(FIXTURES / "corpus.txt")
  trainer.train_and_evaluate(config, workdir)
  losses = make_checkpoints.train_losses(workdir, make_checkpoints.STOP)
  assert losses == [tuple(x) for x in expected["losses"]]
  params = rundir.load_run(workdir, make_checkpoints.END).params
  assert make_checkpoints.params_digest(params) == expected["params_sha256"]
