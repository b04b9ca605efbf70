import math
import random

import numpy as np
import pytest

from lm_jax.tasks import base as tasks
from lm_jax.data import tokenizers
from lm_jax.data.tokenizers import UNK, UNK_ID, WordTokenizer
from lm_jax.errors import UserError

# Canonical spacing: one space between tokens, none at line starts, before
# closing marks or after opening marks, none around hyphens.
CANONICAL = ("ROMEO:\n"
             "O, she doth teach the torches to burn bright!\n"
             "'Tis well-known (and true) o'er all; I'll go... Where's he?\n"
             "\n"
             "JULIET:\n"
             "Ay me! th' eye of \u201cheaven\u201d: 42 [sic]\n")


def test_split_words():
  assert tokenizers.split_words("I'll o'er 'tis th' end--O,\tyes.\r\n") == [
      "I'll", "o'er", "'tis", "th", "'", "end", "-", "-", "O", ",", "yes",
      ".", "\n"]


def test_canonical_text_round_trips():
  tok = WordTokenizer.build(CANONICAL)
  ids = tok.encode(CANONICAL)
  assert UNK_ID not in ids
  assert tok.decode(ids) == CANONICAL


def test_any_spacing_becomes_canonical():
  tok = WordTokenizer.build(CANONICAL)
  messy = "  O ,she   doth\tteach ( and true )\n  ROMEO :\n"
  assert tok.decode(tok.encode(messy)) == "O, she doth teach (and true)\nROMEO:\n"


def test_encode_inverts_decode_on_any_ids():
  tok = WordTokenizer.build(CANONICAL)
  rng = random.Random(0)
  for _ in range(200):
    ids = [rng.randrange(1, tok.vocab_size) for _ in range(rng.randrange(1, 30))]
    assert tok.encode(tok.decode(ids)).tolist() == ids


def test_unknown_words_become_unk():
  tok = WordTokenizer.build("the cat sat on the mat.")
  ids = tok.encode("the dog sat on the zebra.")
  assert [tok.vocab[i] for i in ids] == [
      "the", UNK, "sat", "on", "the", UNK, "."]
  assert tok.unknown("the dog sat on the zebra.") == ["dog", "zebra"]
  assert tok.decode(ids) == "the <unk> sat on the <unk>."
  with pytest.raises(UserError, match=r"'dog', 'zebra'"):
    tok.encode("the dog sat on the zebra.", strict=True)


def test_vocab_cap_min_count_and_order():
  text = "c b a a b c d e e e\n"  # e:3, a:2, b:2, c:2, d:1, \n:1
  assert WordTokenizer.build(text).vocab == [
      UNK, "e", "a", "b", "c", "\n", "d"]  # count, then the token ("\n" < "d")
  assert WordTokenizer.build(text, vocab_size=3).vocab == [UNK, "e", "a"]
  assert WordTokenizer.build(text, min_count=2).vocab == [
      UNK, "e", "a", "b", "c"]
  assert WordTokenizer.build(text, min_count=4).vocab == [UNK]
  with pytest.raises(UserError, match="vocab_size"):
    WordTokenizer.build(text, vocab_size=1)


def test_vocab_order_does_not_depend_on_text_order():
  lines = CANONICAL.splitlines(keepends=True) * 3 + ["zebra yak\n"] * 2
  shuffled = lines[:]
  random.Random(1).shuffle(shuffled)
  assert (WordTokenizer.build("".join(lines), vocab_size=20).vocab
          == WordTokenizer.build("".join(shuffled), vocab_size=20).vocab)


def test_build_tokenizer_takes_only_its_options():
  options = dict(path="x.txt", tokenizer="word", vocab_size=3, min_count=1)
  assert tokenizers.build_tokenizer("word", "a a b c", **options).vocab == [
      UNK, "a", "b"]
  char = tokenizers.build_tokenizer("char", "a a b c", **options)
  assert char.vocab == [UNK, " ", "a", "b", "c"]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_non_latin_text_round_trips(kind, tmp_path):
  text = ("Мой дядя самых честных правил,\nКогда не в шутку занемог!\n"
          "Ελληνικά, café (nai\u0308ve) и ёж.\n")
  tok = tokenizers.build_tokenizer(kind, text)
  assert tok.decode(tok.encode(text)) == text
  tokenizers.save_tokenizer(tok, tmp_path / "tok.json")
  loaded = tokenizers.load_tokenizer(tmp_path / "tok.json")
  assert loaded.vocab == tok.vocab
  assert loaded.decode(loaded.encode(text)) == text


def test_words_keep_combining_marks_and_cjk_is_per_character():
  assert tokenizers.split_words("nai\u0308ve क्या") == ["nai\u0308ve", "क्या"]
  text = "我爱你。Python很好!\n"
  tok = WordTokenizer.build(text)
  assert tokenizers.split_words(text)[:5] == ["我", "爱", "你", "。", "Python"]
  assert tok.decode(tok.encode(text)) == text


def test_encode_prompt_policy():
  word = WordTokenizer.build("the cat sat\n")
  ids, notice = tokenizers.encode_prompt(word, "the dog sat")
  assert ids.tolist() == [word.vocab.index("the"), UNK_ID,
                          word.vocab.index("sat")]
  assert notice is not None and "'dog'" in notice and UNK in notice
  assert tokenizers.encode_prompt(word, "the cat")[1] is None
  with pytest.raises(UserError, match="no tokens"):
    tokenizers.encode_prompt(word, "  ")
  char = tokenizers.CharTokenizer.build("the cat sat\n")
  with pytest.raises(UserError, match="'d', 'g', 'o'"):
    tokenizers.encode_prompt(char, "the dog")


def test_covered_chars_by_hand():
  tok = WordTokenizer.build("a bb,\n(ccc) a")
  ids = tok.encode("a bb, zz\n(ccc) a")  # zz is unknown
  x, y = ids[:-1], ids[1:]
  # Targets: "bb" 2 + space, "," 1, <unk> its space 1, "\n" 1, "(" after a
  # line break 1, "ccc" after "(" 3, ")" 1, "a" 1 + space.
  assert tok.covered_chars(x, y) == 3 + 1 + 1 + 1 + 1 + 3 + 1 + 2
  # Without unknown words: exactly the characters decoding adds.
  ids = tok.encode("a bb,\n(ccc) a")
  assert tok.covered_chars(ids[:-1], ids[1:]) == (
      len(tok.decode(ids)) - len(tok.decode(ids[:1])))
  char = tokenizers.CharTokenizer.build("ab")
  assert char.covered_chars(np.zeros((2, 3)), np.zeros((2, 3))) == 6


def test_bits_per_char_by_hand():
  # A uniform guess over 4 tokens costs ln 4 nats = 2 bits per token:
  # 7 tokens covering 12 characters cost 14 bits, 14/12 bits per character.
  assert tasks.bits_per_char(math.log(4), 7, 12) == pytest.approx(14 / 12)


def test_config_checks_word_options():
  from configs import word_tf
  from lm_jax import config as config_lib
  config = word_tf.get_config("smoke")
  config.data.vocab_size = 1
  with pytest.raises(UserError, match="config.data.vocab_size must be >= 2"):
    config_lib.validate(config)
  config.data.vocab_size, config.data.min_count = 16, 0
  with pytest.raises(UserError, match="config.data.min_count"):
    config_lib.validate(config)
