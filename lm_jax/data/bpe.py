"""Byte-level BPE: subword tokens learnt by Hugging Face `tokenizers`.

The text is read as UTF-8 bytes, so every text encodes and nothing is
`<unk>`. Training starts from the 256 bytes and merges the most frequent
adjacent pair, again and again, until `vocab_size` ids are taken (GPT-2's
scheme: words are split first, with the space before a word kept in it,
shown `Ġ`). `tokenizers` trains and encodes in Rust: the built-in plays
train in about 2 s (docs/TOKENIZERS.md).

The project's special tokens keep their ids: `<unk>` 0, `<pad>` `<bos>`
`<eos>` 1-3 and `<mask>` 4, reserved whether or not the run needs them, so
every BPE vocabulary has one layout; text never encodes to them.
The run directory holds the library's own `tokenizer.json`
(`tokenizers.Tokenizer.from_file` and `transformers` load it as it is).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import typing
from typing import Iterator

import numpy as np
import tokenizers as hf

from lm_jax.errors import UserError
from lm_jax.special_tokens import MASK, SPECIALS

RESERVED = (*SPECIALS, MASK)  # ids 0-4
MIN_VOCAB = 256 + len(RESERVED)  # every byte, and the specials
# Where text may be cut into chunks without changing its tokens: a line
# break between two non-spaces always ends one pre-token and starts the
# next (the ByteLevel split joins a run of spaces to what follows it).
_CUT = re.compile(r"(?<=\S)\n(?=\S)")
CHUNK_CHARS = 1 << 12  # characters per chunk, about


def chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
  """`text` in pieces of about `size` characters, cut where `_CUT` says
  (streamed to the trainer; encoded in parallel, as the whole would be)."""
  start = 0
  while start < len(text):
    cut = _CUT.search(text, start + size)
    end = cut.end() if cut else len(text)
    yield text[start:end]
    start = end


@functools.cache
def _byte_of() -> dict[str, int]:
  """The character each byte is spelt with in the vocabulary, inverted.

  GPT-2's table, which the ByteLevel pre-tokenizer uses: printable bytes
  stand for themselves, the rest for the characters from U+0100 up (so a
  space is `Ġ`, U+0120, and a line break `Ċ`).
  """
  kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD),
          *range(0xAE, 0x100)]
  moved = [b for b in range(256) if b not in kept]
  table = {chr(b): b for b in kept}
  table.update({chr(256 + i): b for i, b in enumerate(moved)})
  return table


def _spelling(token: str) -> bytes | None:
  """The bytes a vocabulary entry stands for; None for a special token."""
  byte_of = _byte_of()
  if token in RESERVED or any(ch not in byte_of for ch in token):
    return None
  return bytes(byte_of[ch] for ch in token)


def _library() -> str:
  return f"tokenizers {importlib.metadata.version('tokenizers')}"


class BPETokenizer:
  """A byte-level BPE vocabulary of `vocab_size` ids, specials included."""
  kind = "bpe"
  options: tuple[str, ...] = ("vocab_size", "vocab_from")
  strict_prompts = False  # nothing is unknown
  byte_level = True

  def __init__(self, tokenizer: hf.Tokenizer):
    self._tok = tokenizer
    # Text that spells a special token ("<eos>") is text, not that token.
    self._tok.encode_special_tokens = True
    # Every id below the vocabulary's size has a token (None is for others).
    self.vocab: list[str] = [typing.cast(str, tokenizer.id_to_token(i))
                             for i in range(tokenizer.get_vocab_size())]
    if tuple(self.vocab[:len(RESERVED)]) != RESERVED:
      raise ValueError(f"the vocabulary must start with {RESERVED}")
    self._bytes = [_spelling(t) for t in self.vocab]
    # Characters each token starts: its bytes that are not UTF-8
    # continuation bytes (10xxxxxx); a special token starts none.
    self._starts = np.array(
        [sum((b & 0xC0) != 0x80 for b in s) if s is not None else 0
         for s in self._bytes], dtype=np.int64)  # (V,)

  @classmethod
  def build(cls, text: str, vocab_size: int = 8192, specials: bool = False,
            mask: bool = False, vocab_from: str = "") -> "BPETokenizer":
    """Trains on `text`, streamed in chunks; `specials` (pairs) and `mask`
    (the masked task): all five are always reserved."""
    del specials, vocab_from  # (build_tokenizer reads vocab_from)
    check_vocab_size(vocab_size)
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(RESERVED),
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(chunks(text), trainer)
    if tok.get_vocab_size() < vocab_size:
      raise UserError(
          f"config.data.vocab_size={vocab_size} is more than the training "
          f"text can fill: every word is one token at "
          f"{tok.get_vocab_size()} ids; set config.data.vocab_size <= "
          f"{tok.get_vocab_size()} or give more text")
    return cls(tok)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def unknown(self, text: str) -> list[str]:
    """Nothing: every text is bytes, and every byte is a token."""
    return []

  def encode(self, text: str, strict: bool = False) -> np.ndarray:
    """Token ids (T,); chunks are encoded in parallel, with the same ids."""
    del strict  # nothing is unknown
    if len(text) <= CHUNK_CHARS:  # a prompt, a pair: one call
      return np.asarray(self._tok.encode(text, add_special_tokens=False).ids,
                        np.int32)
    parts = self._tok.encode_batch_fast(list(chunks(text)),
                                        add_special_tokens=False)
    ids = [np.asarray(p.ids, np.int32) for p in parts]
    return np.concatenate(ids) if ids else np.zeros(0, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """The ids of each of `texts` (short ones: documents), encoded in
    parallel by the library; each as `encode` gives it."""
    parts = self._tok.encode_batch_fast(texts, add_special_tokens=False)
    return [np.asarray(p.ids, np.int32) for p in parts]

  def decode(self, ids) -> str:
    """The text of `ids`; bytes that end a character short give U+FFFD
    (text made as tokens come waits for the rest: `lm_jax/generation/
    detokenize.py`). Special tokens are left out."""
    return self._tok.decode(np.asarray(ids).tolist(),
                            skip_special_tokens=True)

  def token_bytes(self, i: int) -> bytes | None:
    """The bytes token `i` stands for; None for a special token (no text)."""
    return self._bytes[i]

  def pieces(self, ids) -> list[str]:
    """Each token's own text, bytes of a split character as `\\xNN`."""
    return [self.vocab[i] if self._bytes[i] is None else
            self._bytes[i].decode("utf-8", errors="backslashreplace")
            for i in np.asarray(ids).tolist()]

  def token_lengths(self) -> np.ndarray:
    """Characters each token id starts (its first bytes of characters)."""
    return self._starts

  def covered_chars(self, x: np.ndarray, y: np.ndarray) -> int:
    """Characters the targets y start, which over a whole text is its
    length (x unused): a character split across tokens counts once."""
    return int(self._starts[y].sum())

  def to_json(self) -> dict:
    """The library's tokenizer.json, as a dict."""
    return json.loads(self._tok.to_str())

  @classmethod
  def from_json(cls, data: dict) -> "BPETokenizer":
    try:
      tok = hf.Tokenizer.from_str(json.dumps(data))
    except Exception as e:  # the library raises a bare Exception
      raise ValueError(f"not a tokenizer.json: {e}") from None
    return cls(tok)

  def metadata(self) -> dict:
    """What the project knows beside tokenizer.json (written next to it)."""
    return {"kind": self.kind, "library": _library(),
            "vocab_size": self.vocab_size, "byte_level": True,
            "special_tokens": {t: i for i, t in enumerate(RESERVED)},
            "unk": "none: every byte is a token, so no text is <unk>"}


def check_vocab_size(vocab_size) -> None:
  """A vocabulary must hold the 256 bytes and the specials."""
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or \
      vocab_size < MIN_VOCAB:
    raise UserError(
        f"config.data.vocab_size={vocab_size!r} is too small for a "
        f"byte-level BPE: it needs {MIN_VOCAB} ids (256 bytes and "
        f"{len(RESERVED)} special tokens) plus the merges; set "
        f"--config.data.vocab_size to at least {MIN_VOCAB}, e.g. 2048")

