"""Tokenizers: text <-> integer ids, saved with the run as JSON.

Every tokenizer reserves id 0 for `<unk>`, so text from outside the training
vocabulary (a held-out play, a user's prompt) still maps to valid ids.
`encode(..., strict=True)` raises instead, naming the unknown symbols.
"""

from __future__ import annotations

import json
import pathlib
from typing import Protocol

import numpy as np

from lm_jax.errors import UserError

UNK = "<unk>"
UNK_ID = 0


class Tokenizer(Protocol):
  kind: str
  vocab: list[str]

  @property
  def vocab_size(self) -> int: ...
  def encode(self, text: str, strict: bool = False) -> np.ndarray: ...
  def decode(self, ids) -> str: ...
  def unknown(self, text: str) -> list[str]: ...
  def token_lengths(self) -> np.ndarray: ...
  def to_json(self) -> dict: ...


class CharTokenizer:
  """One token per Unicode character; `<unk>` first, then sorted characters."""
  kind = "char"

  def __init__(self, vocab: list[str]):
    if not vocab or vocab[UNK_ID] != UNK:
      raise ValueError(f"vocab must start with {UNK!r}")
    self.vocab = list(vocab)
    self._ids = {ch: i for i, ch in enumerate(self.vocab)}

  @classmethod
  def build(cls, text: str) -> "CharTokenizer":
    return cls([UNK] + sorted(set(text)))

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def unknown(self, text: str) -> list[str]:
    """The distinct characters of `text` outside the vocabulary, sorted."""
    return sorted(set(text) - self._ids.keys())

  def encode(self, text: str, strict: bool = False) -> np.ndarray:
    if strict:
      missing = self.unknown(text)
      if missing:
        raise UserError(
            f"character(s) not in the model's vocabulary: "
            f"{', '.join(repr(c) for c in missing)}; remove them from the "
            "prompt (the vocabulary comes from the training text)")
    get = self._ids.get
    return np.fromiter((get(ch, UNK_ID) for ch in text), dtype=np.int32,
                       count=len(text))

  def decode(self, ids) -> str:
    # An unknown character has no spelling: show the replacement character.
    return "".join("\ufffd" if i == UNK_ID else self.vocab[i]
                   for i in np.asarray(ids).tolist())

  def token_lengths(self) -> np.ndarray:
    """Characters each token id stands for (bits per character needs it)."""
    return np.ones(self.vocab_size, dtype=np.int64)

  def to_json(self) -> dict:
    return {"kind": self.kind, "vocab": self.vocab}

  @classmethod
  def from_json(cls, data: dict) -> "CharTokenizer":
    return cls(data["vocab"])


TOKENIZERS = {"char": CharTokenizer}


def build_tokenizer(kind: str, text: str, **options) -> Tokenizer:
  """A new tokenizer of `kind` whose vocabulary comes from `text`."""
  if kind not in TOKENIZERS:
    raise UserError(f"unknown tokenizer {kind!r}: set config.data.tokenizer "
                    f"to one of {sorted(TOKENIZERS)}")
  return TOKENIZERS[kind].build(text, **options)


def save_tokenizer(tokenizer: Tokenizer, path: str | pathlib.Path) -> None:
  pathlib.Path(path).write_text(
      json.dumps(tokenizer.to_json(), ensure_ascii=False, indent=1) + "\n",
      encoding="utf-8")


def load_tokenizer(path: str | pathlib.Path) -> Tokenizer:
  data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  return TOKENIZERS[data["kind"]].from_json(data)
