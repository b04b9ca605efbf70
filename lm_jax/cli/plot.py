"""Loss curves: `python -m lm_jax.cli.plot --workdir=DIR [DIR ...] [--out=FILE]
[--x=elapsed_s]`.

Flags only; the work is `lm_jax.views.plotting.plot_runs`. One run is drawn into
DIR/loss.png, several into loss.png here (one legend entry per run).
"""

import pathlib

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", None, "Run directory; repeat the flag or list more directories "
    "after it to compare runs.", required=True, flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "PNG to write (default: DIR/loss.png "
                           "for one run, ./loss.png for several).",
                           flag_values=FLAGS)
_X = flags.DEFINE_enum("x", "step", ["step", "elapsed_s"], "The left "
                       "panel's axis: the step, or wall seconds since the "
                       "command started (metrics.jsonl's elapsed_s).",
                       flag_values=FLAGS)


def plot_main(more: list[str]) -> None:
  """Plots the --workdir runs and the directories listed after it."""
  from lm_jax.views import plotting
  workdirs = _WORKDIR.value + more
  default = (pathlib.Path(workdirs[0]) if len(workdirs) == 1
             else pathlib.Path(".")) / plotting.LOSS_PLOT
  out = plotting.plot_runs(workdirs, _OUT.value or default, _X.value)
  print(f"wrote {out}")


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, plot_main, positional=True)


def cli() -> None:
  """The `lm-jax-plot` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
