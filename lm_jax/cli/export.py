"""A trained model for other programs: `lm-jax-export --workdir=DIR
--out=FILE` (one safetensors file, the default) or `--format=hf
--out=FOLDER` (a folder `transformers` loads: docs/EVALUATION.md).

Flags only; the work is `lm_jax.runs.modelfile.export_run` and
`lm_jax.runs.hf_checkpoint.export_hf_run`. Sample from the file with
`lm-jax-sample --model=FILE`.
"""

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to export.",
                               required=True, flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum(
    "format", "safetensors", ["safetensors", "hf"],
    "safetensors: one file lm_jax reads back; hf: a Hugging Face folder "
    "(GPT-2 or Llama) that transformers loads.", flag_values=FLAGS)
_OUT = flags.DEFINE_string(
    "out", None, "File (or, with --format=hf, folder) to write; default "
    "model.safetensors or hf_model.", flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).",
                             flag_values=FLAGS)
_FORCE = flags.DEFINE_boolean("force", False, "Replace --out if it exists.",
                              flag_values=FLAGS)


def export_main() -> None:
  from lm_jax.runs import modelfile
  if _FORMAT.value == "hf":
    out = "hf_model" if _OUT.value is None else _OUT.value
    from lm_jax.runs import hf_checkpoint
    step, arch = hf_checkpoint.export_hf_run(_WORKDIR.value, out, _STEP.value,
                                         _FORCE.value)
    print(f"wrote {out} ({arch}, step {step}); load it with:\n"
          f"  transformers.AutoModelForCausalLM.from_pretrained({out!r})")
    return
  out = "model.safetensors" if _OUT.value is None else _OUT.value
  step = modelfile.export_run(_WORKDIR.value, out, _STEP.value, _FORCE.value)
  print(f"wrote {out} (step {step}); sample with:\n"
        f"  lm-jax-sample --model={out} --prompt=...")


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, export_main)


def cli() -> None:
  """The `lm-jax-export` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
