"""Attention maps: `python -m lm_jax.inspect --workdir=DIR --prompt=TEXT`.

Flags only; the work is `lm_jax.internals`. Writes a PNG grid of attention
weights (one row per layer, one column per head) for the prompt.
"""

from absl import app, flags

from lm_jax import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to load.",
                               required=True)
_PROMPT = flags.DEFINE_string("prompt", "ROMEO:", "Text to look at.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).")
_OUT = flags.DEFINE_string("out", "attention.png", "PNG to write.")


def inspect_main() -> None:
  from lm_jax import internals, trainer

  _, tokenizer, model, params, step = trainer.load_run(_WORKDIR.value,
                                                       _STEP.value)
  tokens = tokenizer.encode(_PROMPT.value, strict=True)
  weights = internals.attention_weights(model, params, tokens)
  out = internals.plot_attention(
      weights, [tokenizer.decode([i]) for i in tokens], _OUT.value)
  print(f"wrote {out} (step {step}, {weights.shape[0]} layers x "
        f"{weights.shape[1]} heads, {len(tokens)} tokens)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.run_main(inspect_main)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
