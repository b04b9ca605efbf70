"""What every task gives the trainer and the commands: its loaded data
(`Loaded`), what its runs can do (`Can`) and the `Task` interface (load,
evaluate; continue, fill, reply, the prompt loop)."""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
import pathlib
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from lm_jax.data import tokenizers, windows
from lm_jax.errors import UserError
from lm_jax.generation import interactive, sampling, scoring, unmask
from lm_jax.runs import rundir
from lm_jax.training import steps


NEXT_TOKEN_METRIC = "nats per token (next token)"  # a language model's


class Loaded(NamedTuple):
  """A task's data: the tokenizer, the training data the train steps draw
  batches from (an array pytree, put on device), what evaluation reads,
  and lines describing it for the log (the first names what it trains on:
  a sweep's results quote it)."""
  tokenizer: tokenizers.Tokenizer
  train: Any
  val: Any
  lines: tuple[str, ...]


class Can(enum.Enum):
  """What a run can do. The commands and the server ask a task's `can`,
  never which task it is; the value says it in a refusal."""
  CONTINUE = "continue a prompt"
  FILL = "fill blanks"
  REPLY = "reply to a prompt"
  INTERACTIVE = "answer in a prompt loop (--interactive)"
  SCORE = "score a text (each token's log-probability)"


# A shipped config whose runs can do each thing: the fix a refusal names.
TRAINED_BY = {Can.CONTINUE: "configs/char_tf.py",
              Can.FILL: "configs/char_mlm.py",
              Can.REPLY: "configs/echo_lstm.py",
              Can.INTERACTIVE: "configs/char_tf.py",
              Can.SCORE: "configs/char_tf.py"}


@dataclasses.dataclass(frozen=True)
class UnmaskOptions:
  """How a run that fills blanks fills and unmasks (lm-jax-sample's flags)."""
  steps: int = 0  # generating: steps to reveal N tokens in; 0: N
  order: str = "confidence"  # or "random" (masked diffusion's order)
  all_at_once: bool = False  # --fill: every blank in one step
  show_steps: bool = False  # print the canvas after each step
  blank: str = "_"  # in --fill text: one hidden token per marker
  top: int = 5  # candidates printed per blank

  def __post_init__(self):
    if not self.blank:
      raise UserError("--blank is empty: give the marker of a hidden token, "
                      "e.g. --blank=_")


class Task(abc.ABC):
  """One registration per kind of data (`lm_jax/tasks/__init__.py:
  TASKS`): what to load, the train steps' objective, how to evaluate, and
  what its runs can do (`can`). A task defines the methods of the
  capabilities it declares; the others refuse in one line naming what
  the run can do (tests/tasks/test_base.py checks that the two agree).
  """
  can: frozenset[Can] = frozenset()
  objective: steps.Objective = steps.NEXT_TOKEN
  does = ""  # what the model does to a phrase, for the prompt loop's help
  example_prompt = ""
  sample_flags = ""  # the sampling the "sample with" hint suggests
  # Whether `Loaded.train` is token ids (maybe memory-mapped) whose windows
  # the loop reads on host per chunk of steps (lm_jax/training/
  # streaming.py) instead of placing them on the device whole.
  streams = False

  def metric(self, config) -> str:
    """What its val loss measures, in words (its lines, the summary and a
    sweep's table name it): nats per token of the next-token prediction,
    unless the task says otherwise."""
    return NEXT_TOKEN_METRIC

  @abc.abstractmethod
  def example(self, config, tokenizer) -> str:
    """The prompt of the "sample with" hint, spelt by the run's vocabulary."""

  @abc.abstractmethod
  def load(self, config, workdir: pathlib.Path) -> Loaded:
    """The tokenizer and the data; refuses a mismatched resume."""

  @abc.abstractmethod
  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]:
    """The record, the lines to print and the texts to log."""

  def refusal(self, need: Can, asked: str) -> UserError:
    """`asked` needs `need`, which this task's runs lack: what they can do."""
    able = ", ".join(c.value for c in Can if c in self.can) or "nothing"
    return UserError(f"{asked} needs a run that can {need.value} (trained "
                     f"with {TRAINED_BY[need]}, say); this run can {able}")

  # The capabilities' methods. CONTINUE or REPLY: `sample`. INTERACTIVE:
  # `responder`. SCORE: `score`. FILL: the rest (and `sample` continues by
  # unmasking).

  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None:
    """Prints the prompt's continuation or the reply to it."""
    raise self.refusal(Can.CONTINUE, "a prompt")

  def responder(self, run: rundir.Run, stop: str, beam: int = 0
                ) -> interactive.Respond:
    """What answers each line of the prompt loop."""
    raise self.refusal(Can.INTERACTIVE, "--interactive")

  def score(self, run: rundir.Run, texts: Sequence[Sequence[int]],
            top: int = 0) -> list[scoring.Scored]:
    """Each token's log-probability given the tokens before it, and the
    `top` likeliest at each position (`scoring.score`)."""
    raise self.refusal(Can.SCORE, "scoring a text")

  def with_options(self, options: UnmaskOptions) -> Task:
    """The task filling and unmasking as `options` say."""
    raise self.refusal(Can.FILL, "filling")

  def fill(self, run: rundir.Run, text: str, key: jax.Array) -> None:
    """Prints `text` with its blanks filled."""
    raise self.refusal(Can.FILL, "--fill")

  def blank_distributions(self, run: rundir.Run, text: str, top: int = 10
                          ) -> tuple[np.ndarray, list[tuple[int, list]]]:
    """The ids of `text` and the model's distribution at each blank."""
    raise self.refusal(Can.FILL, "blanks")

  def encode_blanks(self, tokenizer, text: str, context: int
                    ) -> tuple[np.ndarray, str | None]:
    """Ids of `text` with MASK_ID at each blank, and a notice (or None)."""
    raise self.refusal(Can.FILL, "blanks")

  def filled(self, run: rundir.Run, ids: np.ndarray, key: jax.Array
             ) -> unmask.Unmasked:
    """`ids` with every MASK_ID filled."""
    raise self.refusal(Can.FILL, "blanks")

  def continuation(self, run: rundir.Run, ids: np.ndarray, n: int,
                   key: jax.Array, options: sampling.SamplingOptions
                   ) -> tuple[unmask.Unmasked, int]:
    """`n` tokens unmasked after `ids`; how many of `ids` were kept."""
    raise self.refusal(Can.FILL, "unmasking")


def refuse_beam(beam: int, instead: str) -> None:
  """--beam searches an encoder-decoder's reply; other runs do `instead`."""
  if beam:
    raise UserError(f"--beam searches an encoder-decoder's best reply; "
                    f"{instead}: drop --beam")


def bits_per_char(nats_per_token: float, num_tokens: int,
                  num_chars: int) -> float:
  """The total loss in bits, spread over the characters the tokens cover."""
  return nats_per_token * num_tokens / (num_chars * math.log(2))


def spells(tokenizer, text: str) -> bool:
  """Whether the vocabulary holds every token of `text` (no `<unk>`)."""
  try:
    return tokenizers.encode_prompt(tokenizer, text)[1] is None
  except Exception:  # a character tokenizer refuses unknown characters
    return False


def opening(line: str, words: int = 4, chars: int = 30) -> str:
  """The first few words of a line, for an example prompt."""
  return " ".join(line.split()[:words])[:chars]


def encode_splits(tokenizer, text, train) -> tuple[np.ndarray, np.ndarray]:
  """The train and val texts as ids; a text shorter than one batch is a
  UserError naming the split and the fix."""
  train_ids, val_ids = tokenizer.encode(text.train), tokenizer.encode(text.val)
  check_splits(train_ids, val_ids, train)
  return train_ids, val_ids


def check_splits(train_ids, val_ids, train) -> None:
  """A split shorter than one batch, or longer than a window's start can
  index, is a UserError naming it and the fix."""
  if len(train_ids) > windows.MAX_TOKENS:
    raise UserError(
        f"the training text has {len(train_ids):,} tokens, more than the "
        f"{windows.MAX_TOKENS:,} a window's start can index (JAX draws it "
        "as an int32); train on a part of the corpus (a folder of fewer "
        "files, or a shorter file)")
  need = windows.min_tokens(train.batch_size, train.seq_len)
  for name, ids in (("training", train_ids), ("validation", val_ids)):
    if len(ids) < need:
      raise UserError(
          f"the {name} text has {len(ids)} tokens, fewer than one batch "
          f"needs ({train.batch_size} x {train.seq_len} + 1 = {need}); use a "
          "longer text or lower config.train.batch_size / "
          "config.train.seq_len")
