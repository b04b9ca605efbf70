"""Inside a model: `python -m lm_jax.inspect --workdir=DIR --prompt=TEXT`.

Flags only; the work is `lm_jax.internals`. For a Transformer run, writes a
PNG grid of attention weights (one row per layer, one column per head); for
an LSTM run, the input, forget and output gates and the cell state of every
layer across the prompt.
"""

from absl import app, flags

from lm_jax import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to load.",
                               required=True)
_PROMPT = flags.DEFINE_string("prompt", "ROMEO:", "Text to look at.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).")
_OUT = flags.DEFINE_string("out", "attention.png", "PNG to write.")


def inspect_main() -> None:
  from lm_jax import internals, rundir

  _, tokenizer, model, params, step = rundir.load_run(_WORKDIR.value,
                                                      _STEP.value)
  tokens = tokenizer.encode(_PROMPT.value, strict=True)
  labels = [tokenizer.decode([i]) for i in tokens]
  if isinstance(model, internals.LSTMLM):
    activity = internals.lstm_activity(model, params, tokens)
    out = internals.plot_lstm_activity(activity, labels, _OUT.value)
    print(f"wrote {out} (step {step}, {activity.shape[0]} layers, gates and "
          f"cell over {len(tokens)} tokens)")
    return
  weights = internals.attention_weights(model, params, tokens)
  out = internals.plot_attention(weights, labels, _OUT.value)
  print(f"wrote {out} (step {step}, {weights.shape[0]} layers x "
        f"{weights.shape[1]} heads, {len(tokens)} tokens)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.run_main(inspect_main)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
