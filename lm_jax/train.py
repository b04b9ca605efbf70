"""`python -m lm_jax.train`: the command `lm-jax-train` (lm_jax/cli/train.py)."""

from lm_jax.cli.train import cli

if __name__ == "__main__":
  cli()
