"""What every task gives the trainer: its loaded data (`Loaded`) and the
`Task` interface (load, evaluate, sample, answer in the prompt loop)."""

from __future__ import annotations

import math
import pathlib
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from lm_jax.data import tokenizers, windows
from lm_jax.errors import UserError
from lm_jax.generation import interactive, sampling
from lm_jax.runs import rundir


class Loaded(NamedTuple):
  """A task's data: the tokenizer, the training data the train steps draw
  batches from (an array pytree, put on device), what evaluation reads,
  and lines describing it for the log."""
  tokenizer: tokenizers.Tokenizer
  train: Any
  val: Any
  lines: tuple[str, ...]


class Task(Protocol):
  does: str  # what the model does to a phrase, for the prompt loop's help
  example_prompt: str
  sample_flags: str  # the sampling the "sample with" hint suggests

  def example(self, config, tokenizer) -> str: ...
  def load(self, config, workdir: pathlib.Path) -> Loaded: ...
  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]: ...
  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None: ...
  def responder(self, run: rundir.Run, stop: str, beam: int = 0
                ) -> interactive.Respond: ...


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
  need = windows.min_tokens(train.batch_size, train.seq_len)
  for name, ids in (("training", train_ids), ("validation", val_ids)):
    if len(ids) < need:
      raise UserError(
          f"the {name} text has {len(ids)} tokens, fewer than one batch "
          f"needs ({train.batch_size} x {train.seq_len} + 1 = {need}); use a "
          "longer text or lower config.train.batch_size / "
          "config.train.seq_len")
  return train_ids, val_ids
