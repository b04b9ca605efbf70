"""One file for a trained model: `lm-jax-export --workdir=DIR --out=FILE`.

Flags only; the work is `lm_jax.runs.modelfile.export_run`. Sample from the
file with `lm-jax-sample --model=FILE`.
"""

from absl import app, flags

from lm_jax.cli import flag_parsing, process

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to export.",
                               required=True)
_OUT = flags.DEFINE_string("out", "model.safetensors", "File to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).")
_FORCE = flags.DEFINE_boolean("force", False, "Replace --out if it exists.")


def export_main() -> None:
  from lm_jax.runs import modelfile
  step = modelfile.export_run(_WORKDIR.value, _OUT.value, _STEP.value,
                               _FORCE.value)
  print(f"wrote {_OUT.value} (step {step}); sample with:\n"
        f"  lm-jax-sample --model={_OUT.value} --prompt=...")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  process.run_main(export_main)


def cli() -> None:
  """The `lm-jax-export` console script."""
  app.run(main, flags_parser=flag_parsing.parse_flags)


if __name__ == "__main__":
  cli()
