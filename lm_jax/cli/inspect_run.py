"""Inside a model: `lm-jax-inspect --workdir=DIR --prompt=TEXT`.

Flags only; the work is `lm_jax.views.internals`. Writes a PNG grid of what the
model computes over the prompt, one row per layer: attention weights per
head for a Transformer; gates and cell state for an LSTM; for an
encoder-decoder, how each token of its reply attends to the prompt. For a
masked run, a prompt with blanks (the --blank marker of lm-jax-sample, "_")
also gets OUT_blanks.png: the model's distribution at each blank.
"""

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to load.",
                               required=True, flag_values=FLAGS)
_PROMPT = flags.DEFINE_string("prompt", "ROMEO:", "Text to look at.",
                              flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).",
                             flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "attention.png", "PNG to write.",
                           flag_values=FLAGS)


def inspect_main() -> None:
  from lm_jax.runs import rundir
  from lm_jax.views import internals, plotting

  from lm_jax import tasks

  plotting.figure_path(_OUT.value)  # refused before the model loads
  run = rundir.load_run(_WORKDIR.value, _STEP.value)
  task = tasks.task_of(run.model)
  # A run that fills blanks: a prompt's blanks get their distributions.
  if tasks.Can.FILL in task.can:
    tokens, dists = task.blank_distributions(run, _PROMPT.value)
  else:
    tokens, dists = run.tokenizer.encode(_PROMPT.value, strict=True), []
  labels = run.tokenizer.pieces(tokens)  # subwords: each its own piece
  inside = internals.model_internals(run.model, run.params, tokens)
  rows = None if inside.rows is None else run.tokenizer.pieces(inside.rows)
  out = internals.plot_internals(inside, labels, _OUT.value, rows)
  L, P = inside.values.shape[:2]
  print(f"wrote {out} (step {run.step}, {L} layers x {P} panels: "
        f"{', '.join(inside.panels)}; {len(tokens)} tokens)")
  if dists:
    path = out.with_name(f"{out.stem}_blanks{out.suffix}")
    internals.plot_distributions(dists, labels, path)
    for n, (pos, candidates) in enumerate(dists):
      print(f"blank {n + 1} (token {pos}): "
            f"{tasks.masked.candidates_text(candidates[:5])}")
    print(f"wrote {path} (the distribution at each blank, all hidden)")


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, inspect_main)


def cli() -> None:
  """The `lm-jax-inspect` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
