import re

import pytest

from lm_jax.config import VAL_PLAYS
from lm_jax.data import corpus
from lm_jax.errors import UserError

from conftest import one_line_error, run_command


@pytest.fixture(scope="module")
def plays():
  return corpus.builtin_plays()


def test_builtin_corpus_is_plain_text(plays):
  text = "".join(plays.values())
  for mark in ("**", "_", "#", "[", "]", "\\", "*"):
    assert mark not in text, f"Markdown {mark!r} left in the corpus"
  assert re.search(r"^HAMLET:\nTo be, or not to be", plays["hamlet"], re.M)


def test_builtin_corpus_is_stable(plays):
  # Size and checksum pin the rendering: a change to render_play shows here.
  text = "".join(plays.values())
  assert len(plays) == 38
  assert len(text) == 4_782_163
  assert corpus.checksum(text) == corpus.checksum(
      "".join(corpus.builtin_plays().values()))


def test_render_play_layout():
  md = ("# Title\n\n## ACT I\n\n_Enter A and\nB_\n\n**A**  \nHello, \\--friend;"
        "  \n_\\[Aside]_ quietly.  \n\n_Exit B_\n\nstill A.\n\n**B**\nBye.\n")
  assert corpus.render_play(md) == (
      "A:\nHello, --friend;\nquietly.\nstill A.\n\nB:\nBye.\n")


def test_builtin_validation_holds_out_whole_plays(plays):
  c = corpus.load_corpus("", val_plays=VAL_PLAYS)
  assert c.val == "\n".join(plays[p] for p in VAL_PLAYS)
  assert plays["hamlet"] not in c.train
  assert 0.08 < len(c.val) / (len(c.train) + len(c.val)) < 0.12


def test_unknown_val_play():
  with pytest.raises(UserError, match="unknown play"):
    corpus.load_corpus("", val_plays=("not-a-play",))


def test_text_file_split(text_file):
  text = text_file.read_text()
  c = corpus.load_corpus(str(text_file), val_fraction=0.1)
  assert c.train + c.val == text
  assert len(c.val) == len(text) - int(len(text) * 0.9)


@pytest.mark.parametrize("content, message", [
    (None, "not found"), ("dir", "folder has no text"), (b"", "is empty"),
    (b"\x00\x01\x02abc", "binary"), (b"caf\xe9", "not valid UTF-8")])
def test_bad_corpus_files(tmp_path, content, message):
  path = tmp_path / "corpus.txt"
  if content == "dir":
    path.mkdir()
  elif content is not None:
    path.write_bytes(content)
  with pytest.raises(UserError, match=message):
    corpus.load_corpus(str(path))




def test_whitespace_only_corpus_is_not_called_empty(tmp_path):
  corpus = tmp_path / "blank.txt"
  corpus.write_text("\n" * 500 + "  \t\n")
  out = run_command("lm_jax.train", "--config=configs/char_tf.py:smoke",
             f"--config.data.path={corpus}", f"--workdir={tmp_path}/run")
  one_line_error(out, f"corpus file holds only whitespace (504 bytes of "
                  f"spaces and line breaks): {corpus}; give a file with text "
                  "in it")
  assert not (tmp_path / "run").exists()


def test_is_builtin_names_the_shipped_corpus_only():
  assert corpus.is_builtin("") and corpus.is_builtin(corpus.BUILTIN)
  assert not corpus.is_builtin("my_book.txt")
