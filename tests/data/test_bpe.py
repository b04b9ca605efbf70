"""The byte-level BPE tokenizer (lm_jax/data/bpe.py): the library's file,
the reserved ids, comparable bits per character, streaming whole
characters, and a trained run through sampling, export and inspection."""

import json

import jax
import numpy as np
import pytest
import tokenizers as hf

from configs import bpe_tf, char_gru, char_lstm, echo_lstm, echo_s2s
from lm_jax import config as config_lib
from lm_jax.data import bpe, tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax import tasks
from lm_jax.loop import trainer
from lm_jax.runs import rundir
from lm_jax.special_tokens import MASK_ID

from conftest import run_command

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow

# Several scripts, split characters to come: accents, a dash, CJK.
TEXT = "".join(f"ROMEO {i}: café, naïve — 中文 the quick brown fox.\n"
               f"JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n"
               for i in range(200))
VOCAB = 300


@pytest.fixture(scope="module")
def tok():
  return tokenizers.build_tokenizer("bpe", TEXT, vocab_size=VOCAB)


def test_reserved_ids_and_round_trip(tok):
  assert tok.vocab_size == VOCAB
  assert tok.vocab[:5] == ["<unk>", "<pad>", "<bos>", "<eos>", "<mask>"]
  assert tok.vocab[MASK_ID] == "<mask>"
  for text in (TEXT, "unseen: Здравствуй 😀 <eos> \t x  \n\n  y"):
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= 5  # text is never special
    assert tok.decode(ids) == text
  assert tok.unknown("Здравствуй 😀") == []
  assert tokenizers.encode_prompt(tok, "Здравствуй")[1] is None


def test_chunked_encoding_equals_the_library_on_the_whole(tok):
  text = ("  lead\n \n\nx\ny  \nz" + TEXT) * 30  # longer than one chunk
  assert len(text) > 4 * bpe.CHUNK_CHARS
  library = hf.Tokenizer.from_str(json.dumps(tok.to_json()))
  library.encode_special_tokens = True
  assert tok.encode(text).tolist() == library.encode(text).ids


def test_tokenizer_json_is_the_librarys_own(tok, tmp_path):
  """Saved as the library's tokenizer.json: `Tokenizer.from_file` encodes
  and decodes as we do; loading it back gives the same tokenizer."""
  path = tmp_path / "tokenizer.json"
  tokenizers.save_tokenizer(tok, path)
  library = hf.Tokenizer.from_file(str(path))
  ids = tok.encode(TEXT)
  assert library.encode(TEXT).ids == ids.tolist()
  assert library.decode(ids.tolist()) == TEXT
  loaded = tokenizers.load_tokenizer(path)
  assert isinstance(loaded, bpe.BPETokenizer)
  assert loaded.to_json() == tok.to_json() and loaded.vocab == tok.vocab
  # Char and word tokenizers save as the library's too, told apart by it.
  for kind in ("char", "word"):
    other = tokenizers.build_tokenizer(kind, TEXT)
    tokenizers.save_tokenizer(other, tmp_path / f"{kind}.json")
    assert tokenizers.kind_of(json.loads(
        (tmp_path / f"{kind}.json").read_text())) == kind
    assert tokenizers.load_tokenizer(tmp_path / f"{kind}.json").vocab == \
        other.vocab


def test_training_is_deterministic_and_streamed(tok, monkeypatch):
  """The same text gives the same merges (resuming compares them), and
  the trainer reads chunks, not the whole text."""
  seen = []
  chunks = bpe.chunks
  monkeypatch.setattr(bpe, "chunks", lambda text: (
      seen.append(len(c)) or c for c in chunks(text, 1000)))
  again = bpe.BPETokenizer.build(TEXT, VOCAB)
  assert again.to_json() == tok.to_json()
  assert len(seen) > 1 and max(seen) < len(TEXT)


def test_bits_per_character_count_every_character_once(tok):
  ids = tok.encode(TEXT)
  assert int(tok.token_lengths()[ids].sum()) == len(TEXT)
  assert tok.covered_chars(ids[:-1], ids[1:]) == \
      len(TEXT) - len(tok.decode(ids[:1]))
  assert tok.token_lengths()[:5].tolist() == [0] * 5


def test_pieces_show_subwords_and_split_bytes(tok):
  ids = tok.encode("the café 中")
  pieces = tok.pieces(ids)
  assert "".join(pieces).replace("\\xe4\\xb8\\xad", "中") == "the café 中"
  assert any(p.startswith(" ") for p in pieces)
  assert tok.pieces([0, 4]) == ["<unk>", "<mask>"]


def test_streamed_text_never_splits_a_character(tok, monkeypatch):
  """`generate_text` hands on_text whole characters, even when the
  tokens arrive one byte at a time."""
  text = "日本語 é 😀!"
  ids = tok.encode(text)
  monkeypatch.setattr(sampling, "stream", lambda *a, **k: (
      ids[None, i:i + 1] for i in range(len(ids))))
  shown = []
  out = sampling.generate_text(
      None, None, tok, tok.encode("x"), None,
      sampling.SamplingOptions(max_new_tokens=len(ids)), on_text=shown.append)
  assert out == [text] and "".join(shown) == text
  assert not any("\ufffd" in s for s in shown)
  assert len(ids) > len(text)  # some characters did come in pieces


@pytest.mark.parametrize("size, match", [
    (100, "too small for a byte-level BPE: it needs 261 ids"),
    (10**6, "more than the training text can fill")])
def test_bad_vocab_size_is_one_line(size, match):
  with pytest.raises(UserError, match=match) as e:
    tokenizers.build_tokenizer("bpe", TEXT, vocab_size=size)
  assert "\n" not in str(e.value)


def test_config_refuses_too_small_a_vocabulary():
  config = bpe_tf.get_config("smoke")
  config.data.vocab_size = 260
  with pytest.raises(UserError, match="at least 261"):
    config_lib.validate(config)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
  """bpe_tf:smoke trained for 8 steps on TEXT (in a file)."""
  tmp = tmp_path_factory.mktemp("bpe")
  (tmp / "corpus.txt").write_text(TEXT, encoding="utf-8")
  config = bpe_tf.get_config("smoke")
  config.data.update(path=str(tmp / "corpus.txt"), vocab_size=VOCAB)
  config.train.update(num_steps=8, eval_every=8, sample_tokens=8)
  trainer.train_and_evaluate(config, tmp / "run")
  return config, tmp / "run"


@pytest.mark.slow
def test_run_writes_library_json_with_metadata_beside(bpe_run, capsys):
  config, workdir = bpe_run
  library = hf.Tokenizer.from_file(str(workdir / "tokenizer.json"))
  assert library.get_vocab_size() == VOCAB
  meta = json.loads((workdir / "tokenizer_meta.json").read_text())
  assert meta["kind"] == "bpe" and meta["special_tokens"]["<mask>"] == 4
  # Resuming rebuilds the same tokenizer and goes on.
  config.train.num_steps = 12
  result = trainer.train_and_evaluate(config, workdir)
  assert result["step"] == 12 and np.isfinite(result["val_bpc"])
  out = capsys.readouterr().out
  assert "tokens per character" in out and "no <unk> (byte-level" in out


@pytest.mark.slow
def test_sample_export_and_inspect(bpe_run, tmp_path):
  _, workdir = bpe_run
  args = ["--prompt=Romeo, café", "--max_new_tokens=12", "--top_p=0.9",
          "--seed=1"]
  out = run_command("lm_jax.sample", f"--workdir={workdir}", *args)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("Romeo, café")
  model = tmp_path / "m.safetensors"
  done = run_command("lm_jax.cli.export", f"--workdir={workdir}",
                    f"--out={model}")
  assert done.returncode == 0, done.stderr
  again = run_command("lm_jax.sample", f"--model={model}", *args)
  assert again.returncode == 0 and again.stdout == out.stdout
  png = tmp_path / "att.png"
  seen = run_command("lm_jax.cli.inspect_run", f"--workdir={workdir}",
                    "--prompt=the café", f"--out={png}")
  assert seen.returncode == 0, seen.stderr
  assert png.exists()


def test_cli_bad_vocab_size_exits_2_in_one_line():
  done = run_command("lm_jax.train", "--config=configs/bpe_tf.py:smoke",
                    "--config.data.vocab_size=200", "--workdir=/nonexistent/x")
  assert done.returncode == 2
  assert done.stderr.strip().count("\n") == 0
  assert "at least 261" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("module, carry", [
    (char_lstm, True), (char_gru, True), (echo_s2s, False),
    (echo_lstm, False)], ids=["lstm_carry", "gru_carry", "echo_s2s",
                              "echo_lstm"])
def test_every_model_kind_trains_and_samples(module, carry, tmp_path, capsys):
  (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
  config = module.get_config("smoke")
  config.data.update(tokenizer="bpe", vocab_size=VOCAB,
                     path=str(tmp_path / "corpus.txt"))
  config.train.update(num_steps=4, eval_every=4, log_every=4)
  if carry:
    config.train.carry_state = True
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(result["val_bpc"])
  run = rundir.load_run(tmp_path / "run")
  capsys.readouterr()
  tasks.task_of(run.model).sample(
      run, "O Romeo", jax.random.key(0),
      sampling.SamplingOptions(max_new_tokens=6), 1, stop="")
  assert capsys.readouterr().out.strip()
