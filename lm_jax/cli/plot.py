"""Loss curves: `python -m lm_jax.cli.plot --workdir=DIR [DIR ...] [--out=FILE]
[--x=elapsed_s]`.

Flags only; the work is `lm_jax.views.plotting.plot_runs`. One run is drawn into
DIR/loss.png, several into loss.png here (one legend entry per run).
"""

import pathlib

from absl import app, flags

from lm_jax.cli import flag_parsing, process

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", None, "Run directory; repeat the flag or list more directories "
    "after it to compare runs.", required=True)
_OUT = flags.DEFINE_string("out", None, "PNG to write (default: DIR/loss.png "
                           "for one run, ./loss.png for several).")
_X = flags.DEFINE_enum("x", "step", ["step", "elapsed_s"], "The left "
                       "panel's axis: the step, or wall seconds since the "
                       "command started (metrics.jsonl's elapsed_s).")


def plot_main(workdirs: list[str]) -> None:
  from lm_jax.views import plotting
  default = (pathlib.Path(workdirs[0]) if len(workdirs) == 1
             else pathlib.Path(".")) / plotting.LOSS_PLOT
  out = plotting.plot_runs(workdirs, _OUT.value or default, _X.value)
  print(f"wrote {out}")


def main(argv):
  process.run_main(plot_main, _WORKDIR.value + argv[1:])


def cli() -> None:
  """The `lm-jax-plot` console script."""
  app.run(main, flags_parser=flag_parsing.parse_flags)


if __name__ == "__main__":
  cli()
