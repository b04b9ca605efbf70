"""`python -m lm_jax.sample`: the command `lm-jax-sample` (lm_jax/cli/sample.py)."""

from lm_jax.cli.sample import cli

if __name__ == "__main__":
  cli()
