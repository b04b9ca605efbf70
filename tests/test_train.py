"""lm_jax/train.py: `python -m lm_jax.train` is the command lm-jax-train."""

import subprocess
import sys

import pytest

from lm_jax import train
from lm_jax.cli import train as command

from conftest import REPO


def test_the_launcher_runs_the_command():
  assert train.cli is command.cli


@pytest.mark.slow
def test_python_m_exits_with_the_command_s_status():
  # A process of its own: the exit status of `python -m` is the point.
  out = subprocess.run([sys.executable, "-m", "lm_jax.train",
                        "--config=char_tfx"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.startswith("error: unknown config 'char_tfx'")
