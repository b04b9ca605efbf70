"""lm_jax/sample.py: `python -m lm_jax.sample` is the command lm-jax-sample."""

from lm_jax import sample
from lm_jax.cli import sample as command


def test_the_launcher_runs_the_command():
  assert sample.cli is command.cli
