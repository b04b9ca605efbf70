"""One file for a trained model: `lm-jax-export --workdir=DIR --out=FILE`.

Flags only; the work is `lm_jax.runs.modelfile.export_run`. Sample from the
file with `lm-jax-sample --model=FILE`.
"""

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to export.",
                               required=True, flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "model.safetensors", "File to write.",
                           flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).",
                             flag_values=FLAGS)
_FORCE = flags.DEFINE_boolean("force", False, "Replace --out if it exists.",
                              flag_values=FLAGS)


def export_main() -> None:
  from lm_jax.runs import modelfile
  step = modelfile.export_run(_WORKDIR.value, _OUT.value, _STEP.value,
                               _FORCE.value)
  print(f"wrote {_OUT.value} (step {step}); sample with:\n"
        f"  lm-jax-sample --model={_OUT.value} --prompt=...")


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, export_main)


def cli() -> None:
  """The `lm-jax-export` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
