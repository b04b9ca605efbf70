import numpy as np
import pytest

from lm_jax.data import tokenizers
from lm_jax.errors import UserError


def test_char_round_trip_and_order():
  text = "To be, or not to be:\nthat is the question."
  tok = tokenizers.CharTokenizer.build(text)
  assert tok.vocab[0] == tokenizers.UNK
  assert tok.vocab[1:] == sorted(set(text))
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and len(ids) == len(text)
  assert tok.decode(ids) == text
  assert tokenizers.CharTokenizer.build(text[::-1]).vocab == tok.vocab


def test_unknown_characters():
  tok = tokenizers.CharTokenizer.build("abc")
  assert tok.encode("abz").tolist() == [1, 2, tokenizers.UNK_ID]
  with pytest.raises(UserError, match=r"'y', 'z'"):
    tok.encode("zay", strict=True)


def test_save_load_json(tmp_path):
  tok = tokenizers.CharTokenizer.build("Привет, мир! café")
  tokenizers.save_tokenizer(tok, tmp_path / "tok.json")
  assert "Привет"[0] in (tmp_path / "tok.json").read_text(encoding="utf-8")
  loaded = tokenizers.load_tokenizer(tmp_path / "tok.json")
  assert loaded.vocab == tok.vocab
  assert loaded.decode(loaded.encode("мир café")) == "мир café"
