"""`python -m lm_jax.sweep`: the command `lm-jax-sweep` (lm_jax/cli/sweep.py)."""

from lm_jax.cli.sweep import cli

if __name__ == "__main__":
  cli()
