"""Tokenize once: the cache of ids, its reuse, its invalidation, torn files."""

import json

import ml_collections
import numpy as np
import pytest

from lm_jax.config import base_config
from lm_jax.data import corpus, token_cache, tokenizers
from lm_jax.errors import UserError
from lm_jax.special_tokens import EOS_ID

from conftest import corpus_text


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
  folder = tmp_path / "cache"
  monkeypatch.setenv("LM_JAX_CACHE", str(folder))
  return folder


def _data(**settings) -> ml_collections.ConfigDict:
  data = base_config().data
  data.update(settings)
  return data


def _quiet(path, data):
  said = []
  return token_cache.load(str(path), data, say=said.append), said


@pytest.mark.parametrize("kind, options", [
    ("char", {}), ("word", {"vocab_size": 40}), ("bpe", {"vocab_size": 300})])
def test_a_file_tokenizes_as_in_memory(text_file, kind, options):
  """The same tokenizer and ids as tokenizing the text whole (today's)."""
  data = _data(tokenizer=kind, **options)
  tokens, _ = _quiet(text_file, data)
  text = corpus.load_corpus(str(text_file), 0.1)
  tokenizer = tokenizers.build_tokenizer(kind, text.train, **data)
  assert tokens.tokenizer.to_json() == tokenizer.to_json()
  np.testing.assert_array_equal(tokens.train, tokenizer.encode(text.train))
  np.testing.assert_array_equal(tokens.val, tokenizer.encode(text.val))
  assert isinstance(tokens.train, np.memmap) and tokens.train.dtype == np.uint16
  assert tokens.train_chars == len(text.train)


def test_tokenized_in_chunks_as_whole(text_file, monkeypatch):
  monkeypatch.setattr(token_cache, "FLUSH_CHARS", 500)
  data = _data(tokenizer="bpe", vocab_size=300)
  tokens, _ = _quiet(text_file, data)
  text = corpus.load_corpus(str(text_file), 0.1)
  np.testing.assert_array_equal(tokens.train,
                                tokens.tokenizer.encode(text.train))


def test_second_load_reuses_and_a_changed_file_rebuilds(text_file, cache):
  first, _ = _quiet(text_file, _data())
  assert "tokenized" in first.lines[-1] and str(cache) in first.lines[-1]
  again, _ = _quiet(text_file, _data())
  assert again.lines == (f"token cache: reused {again.train.filename} "
                         f"(clear with `rm -r {cache}`)",)
  np.testing.assert_array_equal(first.train, again.train)
  text_file.write_text(corpus_text().replace("fox", "cat"))
  changed, _ = _quiet(text_file, _data())
  assert "tokenized" in changed.lines[-1]
  assert changed.train.filename != first.train.filename
  assert len(list(cache.glob("ids-*.bin"))) == 2


@pytest.mark.parametrize("damage", ["torn", "foreign", "other key"])
def test_damaged_cache_is_rebuilt(text_file, damage):
  first, _ = _quiet(text_file, _data())
  path, want = first.train.filename, np.array(first.train)
  del first
  data = open(path, "rb").read()
  if damage == "torn":
    data = data[:-3]
  elif damage == "foreign":
    data = b"not ours" + data[8:]
  else:
    data = data.replace(b'"key": "', b'"key": "0', 1)
  open(path, "wb").write(data)
  tokens, said = _quiet(text_file, _data())
  assert said == [f"token cache {path} is torn or foreign: rebuilding it"]
  np.testing.assert_array_equal(tokens.train, want)


def test_large_vocabularies_store_uint32():
  assert token_cache.id_dtype(65536) == np.uint16
  assert token_cache.id_dtype(65537) == np.uint32


def test_documents_end_with_eos_and_whole_ones_are_held_out(tmp_path):
  path = tmp_path / "c.jsonl"
  docs = [("alpha beta " * (i + 1)).strip() for i in range(10)]
  path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  tokens, _ = _quiet(path, _data(val_fraction=0.2))
  tok = tokens.tokenizer
  assert tok.vocab[EOS_ID] == tokenizers.EOS  # reserved for documents

  def split(ids):
    ids = np.asarray(ids)
    assert ids[-1] == EOS_ID
    cuts = np.flatnonzero(ids == EOS_ID)
    return [tok.decode(p) for p in np.split(ids, cuts + 1)[:-1]]
  held = split(tokens.val)
  assert [d + "<eos>" for d in docs] == split(tokens.train) + held
  assert len(held) == 2  # the last documents, at least 20% of the text
  assert "documents, the last 2 as val" in tokens.source


@pytest.mark.parametrize("content, message", [
    ("", "corpus file is empty: {path}; give a file with text in it"),
    (" \n\n", "corpus file holds only whitespace (3 bytes of spaces and line "
     "breaks): {path}; give a file with text in it")])
def test_no_text_is_one_line(tmp_path, content, message):
  path = tmp_path / "blank.txt"
  path.write_text(content)
  with pytest.raises(UserError) as e:
    _quiet(path, _data())
  assert str(e.value) == message.format(path=path)


def test_one_document_cannot_be_split(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "only one"}\n')
  with pytest.raises(UserError, match="holds one document"):
    _quiet(path, _data())


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_documents_batched_as_one_by_one(tmp_path, monkeypatch, kind):
  """Documents tokenized many at a time, long ones in pieces: the ids of
  each on its own, then EOS_ID."""
  monkeypatch.setattr(token_cache, "FLUSH_CHARS", 300)
  (tmp_path / "c").mkdir()
  docs = [corpus_text()[i * 97:(i + 1) * 97 + i * i * 40] for i in range(12)]
  for i, doc in enumerate(docs):
    (tmp_path / "c" / f"{i:02d}.txt").write_text(doc)
  tokens, _ = _quiet(tmp_path / "c", _data(tokenizer=kind, vocab_size=300))
  want = np.concatenate([np.append(tokens.tokenizer.encode(d), EOS_ID)
                         for d in docs])
  np.testing.assert_array_equal(np.concatenate([tokens.train, tokens.val]),
                                want)
