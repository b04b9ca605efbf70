"""Every tokenizer as `transformers` loads it from a run directory: the
same ids and text as lm_jax's, `<unk>` included."""

import json
import random

import pytest

from lm_jax.data import hf_format, tokenizers
from lm_jax.runs import rundir

transformers = pytest.importorskip("transformers")

WORDS = ("Привет", "мир", "ёжик", "Hamlet", "ROMEO", "o'er", "'tis", "I'll",
         "don’t", "2026", "42", "3.14", "café", "naïve", "Straße", "e\u0301",
         "中文", "ДА", "нет", "x")
MARKS = (",", ".", ";", ":", "!", "?", "(", ")", "[", "]", "«", "»", "—",
         "-", "--", "'", "\"", "“", "”", "&", "_", "#", "%", "…", "¿", "¡")


LACKED = str.maketrans("", "", "ёß中7")


def mixed_text(n: int = 10_000, seed: int = 0) -> str:
  """`n` characters of Cyrillic, Latin, digits, punctuation, spaces and
  line breaks, in random order and spacing."""
  rng = random.Random(seed)
  parts = []
  while sum(map(len, parts)) < n:
    parts.append(rng.choice(WORDS + MARKS))
    parts.append(rng.choice([" ", " ", " ", "", "\n", "  ", "\t"]))
  return "".join(parts)[:n]


def saved(tok, tmp_path):
  """`transformers`' tokenizer of a run directory holding `tok`."""
  rundir.write_tokenizer(tmp_path, tok)
  return transformers.AutoTokenizer.from_pretrained(tmp_path)


def check_same(tok, hf_tok, text: str) -> None:
  ids = tok.encode(text)
  assert hf_tok(text)["input_ids"] == ids.tolist()
  assert hf_tok.decode(ids.tolist()) == tok.decode(ids)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("specials", [False, True])
def test_transformers_gives_lm_jax_ids_and_text(kind, specials, tmp_path):
  text = mixed_text()
  # Built without some letters: the text holds symbols it lacks (<unk>).
  tok = tokenizers.build_tokenizer(kind, text.translate(LACKED),
                                   mask=specials,
                                   vocab_size=300 if kind == "word" else 400)
  if kind != "bpe":
    assert (tok.encode(text) == tokenizers.UNK_ID).sum() > 10
  hf_tok = saved(tok, tmp_path)
  check_same(tok, hf_tok, text)
  # Text spelling a special token is text, as in lm_jax.
  check_same(tok, hf_tok, "a <unk> b <eos>")
  assert hf_tok.unk_token == "<unk>" and hf_tok.unk_token_id == 0


def test_word_spacing_rules_match(tmp_path):
  text = ("«Привет», мир! (ROMEO: o'er 3. 14-well-known--\n"
          "'tis don’t… ¿qué?中文e\u0301 x")
  tok = tokenizers.build_tokenizer("word", text)
  hf_tok = saved(tok, tmp_path)
  assert tok.decode(tok.encode(text)) == text
  assert hf_tok.decode(hf_tok(text)["input_ids"]) == text


def test_saved_files_are_the_libraries_and_load_back(tmp_path):
  for kind in ("char", "word"):
    tok = tokenizers.build_tokenizer(kind, "ab c, d\n", specials=True)
    rundir.write_tokenizer(tmp_path, tok)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert hf_format.is_library_json(data) and hf_format.kind(data) == kind
    loaded = rundir.read_tokenizer(tmp_path)
    assert loaded.kind == kind and loaded.vocab == tok.vocab
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<eos>" and config["split_special_tokens"]


def test_a_run_written_before_is_upgraded_when_read(tmp_path):
  tok = tokenizers.build_tokenizer("word", "the cat, the dog\n")
  (tmp_path / "tokenizer.json").write_text(json.dumps(
      {"kind": "word", "vocab": tok.vocab}))
  loaded = rundir.read_tokenizer(tmp_path)
  assert loaded.vocab == tok.vocab
  assert hf_format.is_library_json(
      json.loads((tmp_path / "tokenizer.json").read_text()))
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  check_same(tok, hf_tok, "the dog, the bird\n")


def test_onig_class_ranges():
  assert hf_format.onig_class(lambda c: c in "abcx") == \
      r"\x{61}-\x{63}\x{78}"


def test_the_word_pattern_splits_as_pythons_where_the_engines_differ(tmp_path):
  # Oniguruma's \w takes combining marks and connector punctuation, and
  # not superscript digits; its \s not the separators \x1c-\x1f.
  text = "x\u0301y a\u203fb x\u00b2 q\x1cr \u0903k"
  tok = tokenizers.build_tokenizer("word", text)
  hf_tok = saved(tok, tmp_path)
  assert hf_tok.convert_ids_to_tokens(hf_tok(text)["input_ids"]) == \
      tokenizers.split_words(text)
