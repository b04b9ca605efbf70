"""Sample from a trained run: `python -m lm_jax.sample --workdir=DIR --prompt=...`.

Or from the one file lm-jax-export wrote: `--model=model.safetensors`.
Flags only; the work is `lm_jax.runs.rundir.load_run` (or
`lm_jax.runs.modelfile.load_model`), the model's task (`lm_jax.tasks`: a
language model continues the prompt, an encoder-decoder answers it, a
masked LM fills blanks or unmasks) and
`lm_jax.generation.interactive.prompt_loop`. A flag asking for what the
run cannot do (`Task.can`) is one line saying what it can.
"""

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to load.",
                               flag_values=FLAGS)
_MODEL = flags.DEFINE_string(
    "model", None, "Or a .safetensors file lm-jax-export wrote.",
    flag_values=FLAGS)
_PROMPT = flags.DEFINE_string(
    "prompt", "\n", "Text to continue (an encoder-decoder: to answer).",
    flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).",
                             flag_values=FLAGS)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples, in one batch.",
                                    flag_values=FLAGS)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 500, "Tokens to generate.",
                                flag_values=FLAGS)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 is greedy.",
                                  flag_values=FLAGS)
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k likeliest (0: all).",
                              flag_values=FLAGS)
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass to keep (1: all).",
                            flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Same seed, same text.",
                             flag_values=FLAGS)
_STOP = flags.DEFINE_string(
    "stop", "", "End a sample at this text (not printed); \\n and \\t are "
    "understood, e.g. --stop='\\n\\n'.", flag_values=FLAGS)
_BEAM = flags.DEFINE_integer(
    "beam", 0, "An encoder-decoder: print the best reply of a beam search "
    "this wide (0: greedy or sampled, as --temperature says).", lower_bound=0,
    flag_values=FLAGS)
# A masked run (configs/char_mlm.py, lm_jax/tasks/masked.py).
_FILL = flags.DEFINE_string(
    "fill", None, "A masked run: text whose blanks (--blank) to fill, most "
    "confident first; prints each blank's likeliest tokens.", flag_values=FLAGS)
_BLANK = flags.DEFINE_string("blank", "_", "A masked run: the marker of one "
                             "hidden token in --fill text.", flag_values=FLAGS)
_ALL_AT_ONCE = flags.DEFINE_boolean(
    "all_at_once", False, "A masked run: fill every blank in one step.",
    flag_values=FLAGS)
_UNMASK_STEPS = flags.DEFINE_integer(
    "unmask_steps", 0, "A masked run: steps to reveal --max_new_tokens in "
    "(0: one token per step).", lower_bound=0, flag_values=FLAGS)
_UNMASK_ORDER = flags.DEFINE_enum(
    "unmask_order", "confidence", ["confidence", "random"], "A masked run: "
    "reveal the likeliest tokens first, or random ones (masked diffusion).",
    flag_values=FLAGS)
_SHOW_STEPS = flags.DEFINE_boolean(
    "show_steps", False, "A masked run: print the canvas after each step.",
    flag_values=FLAGS)
_INTERACTIVE = flags.DEFINE_boolean(
    "interactive", False, "A prompt loop: type a phrase, the model continues "
    "it; /help lists the commands.", flag_values=FLAGS)


def unescape(text: str) -> str:
  """The shell passes "\\n" literally; a stop string usually means a newline."""
  return text.replace("\\n", "\n").replace("\\t", "\t")


def utf8(flag: str, text: str) -> str:
  """`text` if it is UTF-8; a byte that is not (the shell passes it as a
  lone surrogate) is a UserError naming it."""
  from lm_jax.errors import UserError
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    try:
      byte = f"byte 0x{text[e.start].encode('utf-8', 'surrogateescape')[0]:02x}"
    except UnicodeEncodeError:
      byte = f"a lone surrogate U+{ord(text[e.start]):04X}"
    raise UserError(f"{flag} holds {byte} at character {e.start + 1}, which "
                    "is not UTF-8 text; give UTF-8 text (check the "
                    "terminal's encoding: `locale`)") from None
  return text


def check_unmask_steps(steps: int, max_new_tokens: int) -> None:
  """A step reveals at least one token: more steps than tokens would run
  empty steps (and hold a canvas for each), so they are refused."""
  from lm_jax.errors import UserError
  if steps > max(max_new_tokens, 1):
    raise UserError(f"--unmask_steps={steps} is more than the "
                    f"--max_new_tokens={max_new_tokens} tokens to reveal "
                    "(each step reveals at least one); pass at most "
                    f"{max(max_new_tokens, 1)}, or 0 for one token per step")


def sample_main() -> None:
  import jax

  from lm_jax import config as config_lib, tasks
  from lm_jax.errors import UserError
  from lm_jax.generation import interactive, sampling
  from lm_jax.runs import modelfile, rundir

  options = sampling.SamplingOptions(
      max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value, top_p=_TOP_P.value)
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise UserError("pass either --workdir=DIR (a training run) or "
                    "--model=FILE (from lm-jax-export)")
  if _MODEL.value and _STEP.value is not None:
    raise UserError("--step picks a checkpoint of a run directory; a model "
                    "file holds the one step it was exported at: drop --step, "
                    "or export that step (lm-jax-export --step=N)")
  if _NUM_SAMPLES.value < 1:
    raise UserError(f"--num_samples must be at least 1, got "
                    f"{_NUM_SAMPLES.value}")
  config_lib.check_seed("--seed", _SEED.value)
  check_unmask_steps(_UNMASK_STEPS.value, _MAX_NEW.value)
  prompt, fill = utf8("--prompt", _PROMPT.value), (
      None if _FILL.value is None else utf8("--fill", _FILL.value))
  if _MODEL.value is not None:
    run = modelfile.load_model(_MODEL.value)
  elif _WORKDIR.value is not None:
    run = rundir.load_run(_WORKDIR.value, _STEP.value)
  task = tasks.task_of(run.model)
  if tasks.Can.FILL in task.can:  # the flags of filling and unmasking
    task = task.with_options(tasks.UnmaskOptions(
        steps=_UNMASK_STEPS.value, order=_UNMASK_ORDER.value,
        all_at_once=_ALL_AT_ONCE.value, show_steps=_SHOW_STEPS.value,
        blank=_BLANK.value))
  stop = unescape(_STOP.value)
  if _INTERACTIVE.value:
    interactive.prompt_loop(task.responder(run, stop, _BEAM.value), options,
                            _SEED.value, task.does)
    return
  if fill is not None:
    task.fill(run, fill, jax.random.key(_SEED.value))
    return
  if not prompt:
    raise UserError("--prompt is empty: give at least one character")
  task.sample(run, prompt, jax.random.key(_SEED.value), options,
              _NUM_SAMPLES.value, stop, _BEAM.value)


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  try:
    return flag_parsing.run(FLAGS, argv, sample_main)
  except KeyboardInterrupt:  # Ctrl-C while a sample streams
    print()
    return 130


def cli() -> None:
  """The `lm-jax-sample` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
