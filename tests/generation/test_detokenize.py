"""lm_jax/generation/detokenize.py: text from token ids as they come, whole
characters only, cut at stop strings."""

import pytest

from lm_jax.data import tokenizers
from lm_jax.data.tokenizers import WordTokenizer
from lm_jax.generation.detokenize import (detokenize, Detokenizer, shown,
                                          token_text)


class Spelt:
  """A byte-level tokenizer whose tokens are the given byte strings."""
  byte_level = True

  def __init__(self, *spellings: bytes):
    self.vocab = list(spellings)

  def token_bytes(self, i: int) -> bytes:
    return self.vocab[i]


def _texts(pieces) -> list[str]:
  return [p.text for p in pieces]


@pytest.mark.parametrize("split", [
    [b"\xc3", b"\xa9"],  # é in two tokens
    [b"\xe4", b"\xb8", b"\xad"],  # 中 in three
    [b"\xf0\x9f", b"\x98", b"\x80"],  # 😀 in three
])
def test_a_split_character_is_held_then_released_whole(split):
  tok = Spelt(b"a", *split, b"b")
  text = Detokenizer(tok)
  assert _texts(text.add([0])) == ["a"]
  for i in range(1, len(split)):
    assert text.add([i]) == []  # held: the character is not out yet
  released = text.add([len(split)])
  char = b"".join(split).decode()
  assert _texts(released) == [""] * (len(split) - 1) + [char]
  assert [p.data for p in released] == split  # each token's own bytes
  assert _texts(text.add([len(split) + 1]) + text.finish()) == ["b"]


def test_a_stop_string_split_across_tokens_stops_there():
  tok = Spelt(b"ab", b"c", b"de", b"f", b"\xc3", b"\xa9!")
  text = Detokenizer(tok, stops=["cd", "xy"])
  assert _texts(text.add([0])) == []  # its "b" could begin a stop
  assert _texts(text.add([1])) == ["ab"]
  assert text.add([2]) == [] and text.stopped
  assert text.add([3]) == [] and text.finish() == []
  # In a split character's tokens, and cutting a token short.
  assert detokenize(tok, [0, 4, 5, 3], stops=["!"]) == "abé"
  assert detokenize(tok, [0, 4, 5, 3], stops=["é"]) == "ab"
  assert detokenize(tok, [0, 1, 2], stops=["bc"]) == "a"


def test_invalid_bytes_the_model_chose_are_shown_once_final():
  tok = Spelt(b"a\xe2", b"b", b"\x80", b"\xd0")
  text = Detokenizer(tok)
  assert text.add([0]) == []  # "\xe2" may begin a character
  # "b" cannot continue it: U+FFFD, shown with "b" (the token that told).
  assert _texts(text.add([1])) == ["a", "\ufffdb"]
  assert _texts(text.add([2])) == ["\ufffd"]  # a lone continuation byte
  assert text.add([3]) == []
  assert _texts(text.finish()) == ["\ufffd"]  # cut short by the end


def test_bpe_text_streams_whole_characters_and_names_byte_tokens():
  text = "Привет, ïve émigré — мир 中文"
  tok = tokenizers.build_tokenizer("bpe", "the quick brown fox " * 50,
                                   vocab_size=270)
  ids = tok.encode(text)
  assert len(ids) > len(text)  # characters do come in pieces
  stream = Detokenizer(tok)
  pieces = [p.text for i in ids for p in stream.add([i])] + _texts(
      stream.finish())
  assert len(pieces) == len(ids) and "".join(pieces) == text
  assert detokenize(tok, ids) == tok.decode(ids) == text
  keys = [token_text(tok, int(i)) for i in ids]
  assert "\ufffd" not in "".join(keys)
  assert "bytes:\\xd0" in keys and token_text(tok, 3) == "<eos>"
  assert shown(b"\xd0\xbc") == "\u043c" and shown(b"\xd0") == "bytes:\\xd0"


def test_a_word_is_spaced_after_the_prompt_and_the_tokens_before():
  tok = WordTokenizer.build("O Romeo , Romeo ! wherefore art thou ( Romeo )")
  prompt, ids = tok.encode("O Romeo"), tok.encode(", wherefore art ( thou )")
  whole = tok.decode(list(prompt) + list(ids))
  assert detokenize(tok, ids, prompt) == whole[len(tok.decode(prompt)):]
  assert detokenize(tok, ids, prompt, stops=["art"]) == ", wherefore "


def test_a_character_cut_short_by_the_end_is_left_out_for_the_terminal():
  tok = Spelt(b"a", b"\xd0", b"\xbc")  # \xd0\xbc: м
  assert detokenize(tok, [0, 1, 2, 0, 1]) == "aмa\ufffd"  # the server's
  assert detokenize(tok, [0, 1, 2, 0, 1], cut_short=False) == "aмa"
  text = Detokenizer(tok)
  text.add([1])
  assert _texts(text.finish(cut_short=False)) == [""]  # no half of one
