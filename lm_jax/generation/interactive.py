"""A prompt loop: the user types a phrase, the model continues (a language
model) or answers it (an encoder-decoder).

Lines starting with "/" are commands that change the sampling options;
/quit, Ctrl-D or Ctrl-C leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import sampling

HELP = """\
Type a phrase and press Enter: the model {does}.
Commands:
  /temp X   temperature (0 is greedy)      /len N    tokens to generate
  /topk K   keep the K likeliest (0: all)  /topp P   nucleus mass (1: all)
  /help     this text                      /quit     leave (or Ctrl-D, Ctrl-C)"""

# command -> (SamplingOptions field, value type)
COMMANDS = {"/temp": ("temperature", float), "/len": ("max_new_tokens", int),
            "/topk": ("top_k", int), "/topp": ("top_p", float)}
QUIT = ("/quit", "/exit", "/q")


def apply_command(line: str,
                  options: sampling.SamplingOptions) -> sampling.SamplingOptions:
  """The options after a command such as "/temp 0.5"; UserError if bad."""
  name, _, arg = line.strip().partition(" ")
  if name not in COMMANDS:
    raise UserError(f"unknown command {name!r}; type /help for the commands")
  field, kind = COMMANDS[name]
  try:
    value = kind(arg.strip())
  except ValueError:
    raise UserError(f"{name} needs a{'n integer' if kind is int else ' number'}"
                    f", e.g. {name} {'20' if kind is int else '0.8'}") from None
  problem = sampling.option_problem(field, value)
  if problem:
    raise UserError(f"{name} {problem}")
  return dataclasses.replace(options, **{field: value})


def describe(options: sampling.SamplingOptions) -> str:
  return (f"temperature {options.temperature}, length "
          f"{options.max_new_tokens}, top-k {options.top_k}, "
          f"top-p {options.top_p}")


Respond = Callable[[str, sampling.SamplingOptions, jax.Array], None]


def shown_prompt(tokenizer, prompt: str) -> str:
  """The prompt as printed before its continuation: as typed, since
  decoding its word tokens would respace it (`%s` as `% s`); a word
  tokenizer drops trailing blanks, which the continuation's own space
  replaces."""
  return prompt.rstrip(" \t") if tokenizer.kind == "word" else prompt


def continuation(params, model, tokenizer, stop: str = "") -> Respond:
  """A language model's answer to a line: the line, then its continuation
  streamed. Raises UserError for a line it cannot read."""

  def respond(line: str, options: sampling.SamplingOptions, key) -> None:
    prompt, notice = tokenizers.encode_prompt(tokenizer, line)
    if notice:
      print(f"note: {notice}")
    print(shown_prompt(tokenizer, line), end="", flush=True)
    sampling.generate_text(
        params, model, tokenizer, prompt, key, options, stop=stop,
        on_text=lambda text: print(text, end="", flush=True))
    print()

  return respond


def prompt_loop(respond: Respond, options: sampling.SamplingOptions,
                seed: int, does: str = "continues it") -> None:
  """Reads phrases from stdin until end of input or Ctrl-C; `respond`
  prints the model's answer to each (the model `does` something to it)."""
  print(HELP.format(does=does))
  print(f"({describe(options)})")
  key = jax.random.key(seed)
  turn = 0
  try:
    while True:
      try:
        line = input("> ")
      except EOFError:
        print()
        return
      except UnicodeDecodeError as e:  # a byte the terminal sent as such
        print(f"error: that line holds byte 0x{e.object[e.start]:02x}, "
              "which is not UTF-8 text; type UTF-8 text (check the "
              "terminal's encoding: `locale`)")
        continue
      if not line.strip():
        continue
      if line.startswith("/"):
        if line.strip() == "/help":
          print(HELP.format(does=does))
          continue
        if line.strip() in QUIT:
          return
        try:
          options = apply_command(line, options)
          print(f"({describe(options)})")
        except UserError as e:
          print(f"error: {e}")
        continue
      try:
        respond(line, options, jax.random.fold_in(key, turn))
      except UserError as e:
        print(f"error: {e}")
        continue
      turn += 1
  except KeyboardInterrupt:
    print()
