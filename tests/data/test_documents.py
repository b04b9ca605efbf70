"""The corpus forms: a text file, .gz, JSONL, a folder; each fault one line."""

import gzip
import json

import pytest

from lm_jax.data import documents
from lm_jax.errors import UserError

from conftest import one_line_error, run_command


def _docs(source) -> list[str]:
  """The documents of `source` whole."""
  docs, parts = [], []
  for piece in documents.pieces(source):
    if piece is None:
      docs.append("".join(parts))
      parts = []
    else:
      parts.append(piece)
  return docs


def test_text_file_is_one_document_read_in_blocks(tmp_path, monkeypatch):
  monkeypatch.setattr(documents, "BLOCK", 7)
  path = tmp_path / "a.txt"
  text = "\ufeffcafé — naïve\n" * 20  # a BOM, multi-byte characters cut
  path.write_text(text, encoding="utf-8")
  source = documents.open_source(str(path))
  assert not source.several
  assert _docs(source) == [text[1:]]


def test_gz_file_reads_as_its_text(tmp_path):
  path = tmp_path / "a.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("hello\nworld\n")
  assert _docs(documents.open_source(str(path))) == ["hello\nworld\n"]


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_jsonl_lines_are_documents(tmp_path, name):
  path = tmp_path / name
  lines = "\n".join(json.dumps({"body": t, "id": i}) for i, t in
                    enumerate(["one", "two\nlines", "three"])) + "\n\n"
  if name.endswith(".gz"):
    path.write_bytes(gzip.compress(lines.encode()))
  else:
    path.write_text(lines)
  source = documents.open_source(str(path), "body")
  assert source.several
  assert _docs(source) == ["one", "two\nlines", "three"]


def test_folder_reads_its_text_files_sorted(tmp_path):
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "2.md").write_text("md")
  (tmp_path / "a.txt").write_text("first")
  (tmp_path / "c.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n')
  (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
  (tmp_path / "empty.txt").write_text("")
  source = documents.open_source(str(tmp_path))
  assert [f.name for f in source.files] == ["a.txt", "2.md", "c.jsonl",
                                            "empty.txt"]
  assert _docs(source) == ["first", "md", "x", "y"]


def test_stat_and_content_keys_follow_the_files(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("some text")
  source = documents.open_source(str(path))
  stat, content = documents.stat_key(source), documents.content_key(source)
  assert documents.stat_key(source) == stat
  path.write_text("other text")
  assert documents.stat_key(source) != stat
  assert documents.content_key(source) != content


@pytest.mark.parametrize("files, field, message", [
    ({"x.bin": b"\x01"}, "text", "corpus folder has no text: {root} holds no "
     ".txt, .md, .jsonl file; put text files in it or name a file with "
     "--config.data.path"),
    ({"c.jsonl": b'{"text": "a"}\n{"body": "b"}\n'}, "text",
     "line 2 of {root}/c.jsonl has no text field 'text'; set "
     "--config.data.text_field to the field holding the text"),
    ({"c.jsonl": b'{"text": "a"}\nnot json\n'}, "text",
     "line 2 of {root}/c.jsonl is not JSON; each line of a JSONL corpus is "
     'one object, e.g. {{"text": "..."}}'),
    ({"a.txt": b"good", "b.txt": b"ok caf\xe9!"}, "text",
     "corpus file is not valid UTF-8 at byte 6 of {root}/b.txt; convert it, "
     "e.g. `iconv -t utf-8`"),
    ({"a.txt": b"abc\x00"}, "text", "corpus file looks binary (a NUL byte at "
     "byte 3): {root}/a.txt; give a UTF-8 text file"),
])
def test_bad_forms_are_one_line(tmp_path, files, field, message):
  root = tmp_path / "corpus"
  root.mkdir()
  for name, data in files.items():
    (root / name).write_bytes(data)
  with pytest.raises(UserError) as e:
    list(documents.pieces(documents.open_source(str(root), field)))
  assert str(e.value) == message.format(root=root)


def test_bad_utf8_byte_counts_across_blocks(tmp_path, monkeypatch):
  monkeypatch.setattr(documents, "BLOCK", 4)
  path = tmp_path / "a.txt"
  path.write_bytes("ab\u00e9cdefg".encode() + b"\xff")
  with pytest.raises(UserError, match="at byte 9 of"):
    list(documents.pieces(documents.open_source(str(path))))


def test_train_command_names_the_missing_field(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "a"}\n{"content": "b"}\n')
  out = run_command("lm_jax.train", "--config=configs/char_tf.py:smoke",
                    f"--config.data.path={path}", f"--workdir={tmp_path}/run")
  one_line_error(out, f"line 2 of {path} has no text field 'text'; set "
                 "--config.data.text_field to the field holding the text")
  assert not (tmp_path / "run").exists()
