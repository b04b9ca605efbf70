"""lm-eval's command line with the `lm_jax` model registered:
`lm-jax-eval --model lm_jax --model_args workdir=DIR --tasks plays_cloze
--include_path experiments/eval_tasks` (docs/EVALUATION.md).

Every argument is lm-eval's (`lm-jax-eval --help` prints its help); this
command only imports lm_jax/evaluation/lm_eval_model.py first, which
registers the model (lm-eval 0.4.13 loads no plugins by itself).
"""

import sys
from unittest import mock

from lm_jax.cli import process
from lm_jax.errors import UserError


def evaluate(argv: list[str]) -> int:
  try:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging
  except ImportError:
    raise UserError("lm-jax-eval needs lm-eval: pip install lm-eval==0.4.13 "
                    "(pinned in requirements-test.txt)") from None
  from lm_jax.evaluation import lm_eval_model  # registers the model
  workdir = _lm_jax_workdir(argv)
  if workdir is not None:  # refused in one line, before lm-eval logs
    lm_eval_model.check_run(workdir)
  setup_logging()
  # lm-eval's parser reads sys.argv (and inserts its `run` subcommand).
  with mock.patch.object(sys, "argv", ["lm-jax-eval", *argv]):
    parser = HarnessCLI()
    args = parser.parse_args()
  parser.execute(args)
  return 0


def _value(argv: list[str], flag: str) -> str | None:
  """The value of `flag` in `argv` (`--flag V` or `--flag=V`), or None."""
  for i, arg in enumerate(argv):
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith(flag + "="):
      return arg[len(flag) + 1:]
  return None


def _lm_jax_workdir(argv: list[str]) -> str | None:
  """The run directory of `--model lm_jax --model_args workdir=DIR`."""
  if _value(argv, "--model") != "lm_jax":
    return None
  for part in (_value(argv, "--model_args") or "").split(","):
    key, _, value = part.strip().partition("=")
    if key == "workdir":
      return value
  return None


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return process.run_main(evaluate, argv)


def cli() -> None:
  """The `lm-jax-eval` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
