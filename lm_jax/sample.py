"""Sample from a trained run: `python -m lm_jax.sample --workdir=DIR --prompt=...`.

Flags only; the work is `lm_jax.trainer.load_run` and
`lm_jax.sampling.generate`.
"""

import sys

from lm_jax import runtime

runtime.tune_malloc()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to load.",
                               required=True)
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text to continue.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples, in one batch.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 500, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k likeliest (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass to keep (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Same seed, same text.")


def sample_main() -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from lm_jax import sampling, tokenizers, trainer
  from lm_jax.errors import UserError

  options = sampling.SamplingOptions(
      max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value, top_p=_TOP_P.value)
  if _NUM_SAMPLES.value <= 0:
    raise UserError(f"--num_samples must be positive, got {_NUM_SAMPLES.value}")
  _, tokenizer, model, params, _ = trainer.load_run(_WORKDIR.value, _STEP.value)
  if not _PROMPT.value:
    raise UserError("--prompt is empty: give at least one character")
  prompt, notice = tokenizers.encode_prompt(tokenizer, _PROMPT.value)
  if notice:
    print(f"note: {notice}", file=sys.stderr)
  batch = jnp.asarray(np.tile(prompt, (_NUM_SAMPLES.value, 1)))
  ids = sampling.generate(params, model, batch, jax.random.key(_SEED.value),
                          options)
  for i, row in enumerate(np.asarray(ids)):
    if _NUM_SAMPLES.value > 1:
      print(f"---------- sample {i + 1} ----------")
    print(tokenizer.decode(np.concatenate([prompt, row])))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.run_main(sample_main)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
