"""Tokenizers: text <-> integer ids, saved with the run as JSON.

Every tokenizer reserves id 0 for `<unk>`, so text from outside the training
vocabulary (a held-out play, a user's prompt) still maps to valid ids. One
built for pairs (`specials=True`) reserves ids 1-3 for `<pad>`, `<bos>` and
`<eos>` as well; one built for the masked task (`mask=True`) those and
`<mask>` at id 4. None of them is ever read from text; a tokenizer.json
holds its vocabulary, specials included, so it loads as it was built.

Every kind saves as the `tokenizers` library's tokenizer.json, which
`transformers` loads too (lm_jax/data/hf_format.py); a run written before
that, `{"kind": ..., "vocab": [...]}`, still loads (`tokenizer_from_json`).
`encode(..., strict=True)` raises instead, naming the unknown symbols.

Three kinds: `CharTokenizer` (every character of the training text),
`WordTokenizer` (the most frequent words, punctuation marks and line breaks)
and `BPETokenizer` (byte-level subwords, lm_jax/data/bpe.py).
"""

from __future__ import annotations

import collections
import functools
import json
import pathlib
import re
import sys
import unicodedata
from typing import Protocol

import numpy as np

from lm_jax.data import hf_format
from lm_jax.data.bpe import BPETokenizer
from lm_jax.errors import UserError

# A tokenizer built for pairs (`lm_jax.data.pairs`) has three more specials
# after `<unk>`: the padding of a batch, and the start and end of a reply.
from lm_jax.special_tokens import (  # noqa: F401 (the tokenizers' API)
    BOS, BOS_ID, EOS, EOS_ID, MASK, MASK_ID, MASKED_SPECIALS, PAD, PAD_ID,
    SPECIALS, UNK, UNK_ID)


def _head(specials: bool, mask: bool = False) -> list[str]:
  """The ids before the text's own tokens."""
  if mask:
    return list(MASKED_SPECIALS)
  return list(SPECIALS) if specials else [UNK]


class Tokenizer(Protocol):
  kind: str
  vocab: list[str]
  options: tuple[str, ...]  # the config.data fields `build` takes
  strict_prompts: bool  # unknown symbols in a prompt: an error, or `<unk>`
  byte_level: bool  # every text encodes: no `<unk>`

  @property
  def vocab_size(self) -> int: ...
  def encode(self, text: str, strict: bool = False) -> np.ndarray: ...
  def decode(self, ids) -> str: ...
  def pieces(self, ids) -> list[str]: ...
  def unknown(self, text: str) -> list[str]: ...
  def token_lengths(self) -> np.ndarray: ...
  def covered_chars(self, x: np.ndarray, y: np.ndarray) -> int: ...
  def to_json(self) -> dict: ...


class CharTokenizer:
  """One token per Unicode character; `<unk>` first, then sorted characters."""
  kind = "char"
  options: tuple[str, ...] = ("vocab_from",)
  strict_prompts = True  # a character has no `<unk>`-worthy meaning
  byte_level = False

  def __init__(self, vocab: list[str]):
    if not vocab or vocab[UNK_ID] != UNK:
      raise ValueError(f"vocab must start with {UNK!r}")
    self.vocab = list(vocab)
    self._ids = {ch: i for i, ch in enumerate(self.vocab)}
    self._table: np.ndarray | None = None  # _code_table(), on first use

  @classmethod
  def build(cls, text: str, specials: bool = False, mask: bool = False,
            vocab_from: str = "") -> "CharTokenizer":
    return cls(_head(specials, mask) + sorted(set(text)))

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
    # Vectorised (a corpus of millions of characters in milliseconds): the
    # code points index a table of ids, <unk> for those the vocabulary lacks.
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                          dtype=np.uint32)
    table = self._code_table()
    return table[np.minimum(codes, len(table) - 1)]

  def _code_table(self) -> np.ndarray:
    """Token id by code point, up to the vocabulary's largest character,
    then one `<unk>` that every larger code point reads."""
    if self._table is None:
      chars = {ord(ch): i for ch, i in self._ids.items() if len(ch) == 1}
      table = np.full(max(chars, default=-1) + 2, UNK_ID, np.int32)
      table[list(chars)] = list(chars.values())
      self._table = table
    return self._table

  def decode(self, ids) -> str:
    # An unknown character has no spelling: show the replacement character.
    return "".join("\ufffd" if i == UNK_ID else self.vocab[i]
                   for i in np.asarray(ids).tolist())

  def pieces(self, ids) -> list[str]:
    """Each token's own spelling (attention maps label with it)."""
    return [self.vocab[i] for i in np.asarray(ids).tolist()]

  def token_lengths(self) -> np.ndarray:
    """Characters each token id stands for (bits per character needs it)."""
    return np.ones(self.vocab_size, dtype=np.int64)

  def covered_chars(self, x: np.ndarray, y: np.ndarray) -> int:
    """Characters the targets y stand for (x, the tokens before, unused)."""
    return int(np.size(y))

  def to_json(self) -> dict:
    """The library's tokenizer.json, as a dict (hf_format.char_json)."""
    return hf_format.char_json(self.vocab)

  @classmethod
  def from_json(cls, data: dict) -> "CharTokenizer":
    return cls(_vocab(data))


# Scripts written without spaces between words: every character is a token,
# and decoding puts no space on either side of it.
_CJK = ("\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf"
        "\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f")
_IS_CJK = re.compile(f"[{_CJK}]")
_APOSTROPHES = "'\u2019"
# Decoding puts no space before a closing mark, none after an opening mark,
# and none on either side of a hyphen (`well-known`, `then--O`).
_CLOSING = frozenset(",.;:!?)]}%\u2019\u201d\u00bb\u2026'")
_OPENING = frozenset("([{\u2018\u201c\u00ab\u00bf\u00a1")
_JOINERS = frozenset("-")


def _mark_ranges() -> str:
  """A regex class body of every combining mark (category M*), as ranges."""
  ranges: list[list[int]] = []
  for c in range(sys.maxunicode + 1):
    if unicodedata.category(chr(c)).startswith("M"):
      if ranges and ranges[-1][1] == c - 1:
        ranges[-1][1] = c
      else:
        ranges.append([c, c])
  return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@functools.cache
def _word_pattern() -> re.Pattern:
  """Words, line breaks, and every other non-space character on its own.

  A word is letters and digits of any script, with the combining marks
  that follow them (decomposed accents, Indic vowel signs), apostrophes
  inside (`o'er`, `I'll`) and at most one in front (`'tis`). Built on first
  use: finding the combining marks scans the Unicode table (~0.3 s).
  """
  marks = _mark_ranges()
  letter = rf"[^\W_{_CJK}]"  # a letter or digit, not `_`, not CJK
  part = rf"{letter}(?:{letter}+|[{marks}]+)*"
  apos = f"[{_APOSTROPHES}]"
  return re.compile(rf"{apos}?{part}(?:{apos}{part})*|\n|\S[{marks}]*")


def split_words(text: str) -> list[str]:
  """The word tokenizer's tokens of `text`; other whitespace than "\\n" goes."""
  return _word_pattern().findall(text)


def _space_before(token: str) -> bool:
  """Whether decoding puts a space before `token` in running text."""
  return not (token == "\n" or token in _CLOSING or token in _JOINERS
              or _IS_CJK.match(token))


def _glues_next(token: str) -> bool:
  """Whether decoding puts no space after `token` (so the next one touches)."""
  return (token == "\n" or token in _OPENING or token in _JOINERS
          or bool(_IS_CJK.match(token)))


class WordTokenizer:
  """The most frequent words, punctuation marks and "\\n" of a text.

  Case is kept (`The` and `the` are two words), so text round-trips. The
  vocabulary is `<unk>`, then the tokens seen at least `min_count` times by
  count (descending), ties by the token itself, cut at `vocab_size` ids in
  all: the same text gives the same ids whatever its order of ties.

  Decoding spells the tokens with one space between them, except: none at
  the start of a line, none before `\\n` or a closing mark (`, . ; : ! ? '
  ) ] }` and closing quotes), none after an opening mark (`( [ {` and opening
  quotes), none around `-` and CJK characters. Text in that spacing (the
  *canonical* spacing) round-trips: decode(encode(text)) == text when every
  token is in the vocabulary; any text does up to its spacing.
  """
  kind = "word"
  options: tuple[str, ...] = ("vocab_size", "min_count", "vocab_from")
  strict_prompts = False  # an unknown word becomes `<unk>`, with a notice
  byte_level = False

  def __init__(self, vocab: list[str]):
    if not vocab or vocab[UNK_ID] != UNK:
      raise ValueError(f"vocab must start with {UNK!r}")
    self.vocab = list(vocab)
    self._ids = {w: i for i, w in enumerate(self.vocab)}
    self._space = np.array([_space_before(w) for w in self.vocab])  # (V,)
    self._glue = np.array([_glues_next(w) for w in self.vocab])  # (V,)

  @classmethod
  def build(cls, text: str, vocab_size: int = 8192, min_count: int = 1,
            specials: bool = False, mask: bool = False, vocab_from: str = ""
            ) -> "WordTokenizer":
    if vocab_size < 2 or min_count < 1:
      raise UserError(
          f"config.data.vocab_size must be >= 2 and config.data.min_count >= "
          f"1, got {vocab_size} and {min_count}")
    counts = collections.Counter(split_words(text))
    ranked = sorted((w for w, n in counts.items() if n >= min_count),
                    key=lambda w: (-counts[w], w))
    head = _head(specials, mask)
    return cls(head + ranked[:max(vocab_size - len(head), 0)])

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def unknown(self, text: str) -> list[str]:
    """The distinct tokens of `text` outside the vocabulary, sorted."""
    return sorted(set(split_words(text)) - self._ids.keys())

  def encode(self, text: str, strict: bool = False) -> np.ndarray:
    if strict:
      missing = self.unknown(text)
      if missing:
        raise UserError(
            f"word(s) not in the model's vocabulary: "
            f"{', '.join(repr(w) for w in missing)}; rephrase without them")
    get = self._ids.get
    return np.array([get(w, UNK_ID) for w in split_words(text)],
                    dtype=np.int32)

  def decode(self, ids) -> str:
    parts, glue = [], True  # no space at the start of the text
    for i in np.asarray(ids).tolist():
      if self._space[i] and not glue:
        parts.append(" ")
      parts.append(self.vocab[i])
      glue = self._glue[i]
    return "".join(parts)

  def pieces(self, ids) -> list[str]:
    """Each token's own spelling (attention maps label with it)."""
    return [self.vocab[i] for i in np.asarray(ids).tolist()]

  def token_lengths(self) -> np.ndarray:
    """Characters each token id stands for: its spelling plus its space.

    len(token) + 1 for tokens decoded with a space before them in running
    text, len(token) for the rest (`\\n`, closing marks, `-`); `<unk>` counts
    its space only, since the word it replaced is not predicted.
    """
    lengths = np.array([len(w) for w in self.vocab]) + self._space
    lengths[UNK_ID] = 1
    return lengths.astype(np.int64)

  def covered_chars(self, x: np.ndarray, y: np.ndarray) -> int:
    """Characters the targets y stand for, each after the token x before it.

    Sum of token_lengths()[y], less the spaces decoding drops: one for each
    spaced target that follows a line break, an opening mark or `-`.
    """
    dropped = self._space[y] & self._glue[x]
    return int(self.token_lengths()[y].sum() - dropped.sum())

  def to_json(self) -> dict:
    """The library's tokenizer.json, as a dict (hf_format.word_json)."""
    return hf_format.word_json(self.vocab, _library_word_pattern(),
                               self._space.tolist(), self._glue.tolist())

  @classmethod
  def from_json(cls, data: dict) -> "WordTokenizer":
    return cls(_vocab(data))


def _vocab(data: dict) -> list[str]:
  """The vocabulary of a saved char or word tokenizer: the library's
  tokenizer.json, or the `{"kind", "vocab"}` of runs written before it."""
  return hf_format.vocab(data) if hf_format.is_library_json(data) else \
      data["vocab"]


@functools.cache
def _library_word_pattern() -> str:
  """`_word_pattern` for the `tokenizers` library: the same matches, its
  classes spelt out as code points (~1 s to build, once)."""
  marks = hf_format.onig_class(
      lambda c: unicodedata.category(c).startswith("M"))
  letter = "[" + hf_format.onig_class(
      lambda c: c.isalnum() and not _IS_CJK.match(c)) + "]"
  part = rf"{letter}(?:{letter}+|[{marks}]+)*"
  apos = "[" + "".join(f"\\x{{{ord(a):x}}}" for a in _APOSTROPHES) + "]"
  return (rf"{apos}?{part}(?:{apos}{part})*|\n"
          rf"|[^{hf_format.whitespace()}][{marks}]*")


TOKENIZERS: dict[str, type[CharTokenizer] | type[WordTokenizer]
                 | type[BPETokenizer]] = {
    "char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}


def build_tokenizer(kind: str, text: str, specials: bool = False,
                    mask: bool = False, **options) -> Tokenizer:
  """A new tokenizer of `kind` whose vocabulary comes from `text`.

  `options` may be all of `config.data`: each tokenizer takes only the fields
  named in its `options` (the word tokenizer: vocab_size, min_count; BPE:
  vocab_size).
  `specials`: reserve PAD_ID, BOS_ID and EOS_ID too (pairs need them);
  `mask`: those and MASK_ID (the masked task; a BPE reserves all five).
  `vocab_from` (an option): a saved vocabulary, used as it is (`load_from`).
  """
  if kind not in TOKENIZERS:
    raise UserError(f"unknown tokenizer {kind!r}: set config.data.tokenizer "
                    f"to one of {sorted(TOKENIZERS)}")
  cls = TOKENIZERS[kind]
  if options.get("vocab_from"):
    tokenizer = load_from(options["vocab_from"])
    if tokenizer.kind != kind:
      raise UserError(
          f"config.data.vocab_from={options['vocab_from']!r} holds a "
          f"{tokenizer.kind} vocabulary, and config.data.tokenizer is "
          f"{kind!r}; set --config.data.tokenizer={tokenizer.kind}")
    return tokenizer
  return cls.build(text, specials=specials, mask=mask,
                   **{k: options[k] for k in cls.options if k in options})


def encode_prompt(tokenizer: Tokenizer, text: str
                  ) -> tuple[np.ndarray, str | None]:
  """Prompt ids, and a notice naming the words read as `<unk>` (or None).

  A character tokenizer refuses unknown characters instead (UserError).
  """
  ids = tokenizer.encode(text, strict=tokenizer.strict_prompts)
  if len(ids) == 0:
    raise UserError("the prompt has no tokens (only spaces?): give at least "
                    "one word or character")
  missing = tokenizer.unknown(text)
  if not missing:
    return ids, None
  return ids, (f"not in the model's vocabulary, read as {UNK}: "
               f"{', '.join(repr(w) for w in missing)}")


def save_tokenizer(tokenizer: Tokenizer, path: str | pathlib.Path) -> None:
  """tokenizer.json at `path`; `side_files` names the two beside it."""
  pathlib.Path(path).write_text(
      json.dumps(tokenizer.to_json(), ensure_ascii=False, indent=1) + "\n",
      encoding="utf-8")


def side_files(tokenizer: Tokenizer) -> dict[str, dict]:
  """The files `transformers` reads beside tokenizer.json, by name."""
  return hf_format.side_files(tokenizer.vocab)


def kind_of(data: dict) -> str:
  """The kind of a saved tokenizer: the library's tokenizer.json says it
  by its model (hf_format.kind), an older file by its "kind"."""
  return hf_format.kind(data) if hf_format.is_library_json(data) else \
      data["kind"]


def tokenizer_from_json(data: dict) -> Tokenizer:
  """The tokenizer `to_json` gave `data` (or an older file's)."""
  return TOKENIZERS[kind_of(data)].from_json(data)


def load_from(path: str | pathlib.Path) -> Tokenizer:
  """The vocabulary saved at `path`: a tokenizer.json, a folder holding
  one, or a model file lm-jax-export wrote (its metadata holds it)."""
  file = pathlib.Path(path)
  file = file / "tokenizer.json" if file.is_dir() else file
  try:
    try:
      return load_tokenizer(file)
    except UnicodeDecodeError:  # binary: a model file
      from safetensors import safe_open
      with safe_open(file, framework="np") as f:
        return tokenizer_from_json(json.loads(f.metadata()["tokenizer"]))
  except Exception as e:  # OSError, JSON, a missing key, safetensors' own
    raise UserError(
        f"config.data.vocab_from={str(path)!r}: no vocabulary lm_jax reads "
        f"there ({type(e).__name__}); pass a tokenizer.json, a folder with "
        "one, or a file lm-jax-export wrote") from None


def load_tokenizer(path: str | pathlib.Path) -> Tokenizer:
  return tokenizer_from_json(
      json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
