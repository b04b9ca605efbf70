"""The character and word tokenizers in Hugging Face's formats.

A run directory holds one tokenizer format, the `tokenizers` library's
tokenizer.json, which lm_jax reads back (lm_jax/data/tokenizers.py:
tokenizer_from_json) and `transformers.AutoTokenizer.from_pretrained(DIR)`
loads with the two files beside it (`side_files`): tokenizer_config.json
and special_tokens_map.json. Both give the same ids and text.

A character vocabulary is a `WordLevel` model over single characters (a
pre-tokenizer that splits off every character); a word vocabulary a
`WordLevel` model whose pre-tokenizer keeps exactly what
`lm_jax.data.tokenizers.split_words` finds (its pattern, written in the
library's regex dialect by `onig_class`), and whose decoder spaces the
words as `WordTokenizer.decode` does: one space between two tokens, less
the spaces the spacing rules drop (each token's flags written into it as
markers, the marked spaces removed after joining).
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterable

import tokenizers as hf

from lm_jax.special_tokens import MASKED_SPECIALS, UNK

# Every character, "\n" included (the library's "." stops at line breaks).
CHAR_PATTERN = r"[\s\S]"
# Markers of the word decoder: noncharacters, never in text.
_NO_SPACE_BEFORE, _GLUE_AFTER = "\ufdd0", "\ufdd1"
_NEVER = "\ufdd2\ufdd2"  # a WordPiece prefix no token starts with
# Read by `transformers`: the special tokens, by role, where a vocabulary
# has them (a character or word run without pairs has `<unk>` only).
ROLES = {"unk_token": "<unk>", "pad_token": "<pad>", "bos_token": "<bos>",
         "eos_token": "<eos>", "mask_token": "<mask>"}


def onig_class(keep: Callable[[str], bool]) -> str:
  """The inside of a regex class (`[...]`) of the code points `keep` holds,
  as `\\x{...}` ranges: the same set in Python's `re` and the library's
  Oniguruma, whose `\\w` and `\\s` differ from Python's."""
  ranges: list[list[int]] = []
  for c in range(sys.maxunicode + 1):
    if keep(chr(c)):
      if ranges and ranges[-1][1] == c - 1:
        ranges[-1][1] = c
      else:
        ranges.append([c, c])
  body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}"
                 for a, b in ranges)
  return body


@functools.cache
def whitespace() -> str:
  """What Python's `\\s` matches in a str (str.isspace), a class's inside."""
  return onig_class(str.isspace)


def _library(vocab: list[str], pre_tokenizer, decoder) -> dict:
  """A WordLevel tokenizer.json of `vocab` (id = position), `<unk>` for
  what it lacks; its special tokens registered as such."""
  import json
  tok = hf.Tokenizer(hf.models.WordLevel(
      {t: i for i, t in enumerate(vocab)}, unk_token=UNK))
  tok.pre_tokenizer = pre_tokenizer
  tok.decoder = decoder
  tok.add_special_tokens([t for t in vocab if t in MASKED_SPECIALS])
  return json.loads(tok.to_str())


def char_json(vocab: list[str]) -> dict:
  """A character vocabulary: `<unk>` decodes to U+FFFD, as CharTokenizer's."""
  return _library(
      vocab, hf.pre_tokenizers.Split(hf.Regex(CHAR_PATTERN), "isolated"),
      hf.decoders.Sequence([hf.decoders.Replace(UNK, "\ufffd"),
                            hf.decoders.Fuse()]))


def word_json(vocab: list[str], pattern: str, space_before: Iterable[bool],
              glues_next: Iterable[bool]) -> dict:
  """A word vocabulary: its tokens are `pattern`'s matches (the rest,
  whitespace, dropped), decoded with a space before a token unless it does
  not take one (`space_before` False) or the one before it glues
  (`glues_next`)."""
  marks = []
  for token, space, glue in zip(vocab, space_before, glues_next):
    if glue or not space:
      marked = ("" if space else _NO_SPACE_BEFORE) + token + (
          _GLUE_AFTER if glue else "")
      marks.append(hf.decoders.Replace(
          hf.Regex(r"\A" + "".join(f"\\x{{{ord(c):x}}}" for c in token)
                   + r"\z"), marked))
  join = [hf.decoders.WordPiece(prefix=_NEVER, cleanup=False),
          hf.decoders.Fuse()]
  unmark = [hf.decoders.Replace(f"{_GLUE_AFTER} {_NO_SPACE_BEFORE}", ""),
            hf.decoders.Replace(f"{_GLUE_AFTER} ", ""),
            hf.decoders.Replace(f" {_NO_SPACE_BEFORE}", ""),
            hf.decoders.Replace(_GLUE_AFTER, ""),
            hf.decoders.Replace(_NO_SPACE_BEFORE, "")]
  return _library(
      vocab, hf.pre_tokenizers.Split(hf.Regex(pattern), "removed",
                                     invert=True),
      hf.decoders.Sequence(marks + join + unmark))


def is_library_json(data: dict) -> bool:
  """Whether `data` is a tokenizer.json written by `tokenizers`."""
  return isinstance(data.get("model"), dict) and "added_tokens" in data


def kind(data: dict) -> str:
  """The lm_jax tokenizer a library tokenizer.json is: "bpe" (a BPE
  model), "char" (WordLevel split into characters) or "word"."""
  if data["model"].get("type") == "BPE":
    return "bpe"
  split = data.get("pre_tokenizer") or {}
  is_char = split.get("pattern") == {"Regex": CHAR_PATTERN}
  return "char" if is_char else "word"


def vocab(data: dict) -> list[str]:
  """A WordLevel tokenizer.json's tokens in id order."""
  by_id = sorted((i, t) for t, i in data["model"]["vocab"].items())
  if [i for i, _ in by_id] != list(range(len(by_id))):
    raise ValueError("the vocabulary's ids are not 0, 1, 2, ...")
  return [t for _, t in by_id]


def side_files(vocab: list[str]) -> dict[str, dict]:
  """tokenizer_config.json and special_tokens_map.json of a vocabulary:
  the special tokens by role, nothing added around the text, the text of
  a special token read as text, spaces left as decoded."""
  roles = {role: t for role, t in ROLES.items() if t in vocab}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **roles,
            "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": True}
  return {"tokenizer_config.json": config, "special_tokens_map.json": roles}
