"""A corpus on disk, read in pieces: a text file, a `.gz` file, a JSONL
file of documents, or a folder of them (docs/DATA.md).

`config.data.path` names one of

- a text file (`.txt`, `.md`, anything else not below): one document;
- a gzip-compressed one (`.gz`): the same, decompressed as it is read;
- a JSONL file (`.jsonl`, `.jsonl.gz`): one document per line, a JSON
  object whose `config.data.text_field` holds its text;
- a folder: every `.txt`, `.md` and `.jsonl` file under it, in sorted
  order, each text file one document.

Nothing here holds the whole corpus: `pieces` yields the text a block of
bytes at a time, and `None` between two documents (where the tokenized
corpus gets the end-of-text id). Every fault is a one-line UserError
naming the file and, for bad UTF-8, the byte.
"""

from __future__ import annotations

import codecs
import dataclasses
import errno
import gzip
import hashlib
import json
import pathlib
import typing
from typing import IO, Iterator

from lm_jax.errors import UserError

FOLDER_SUFFIXES = (".txt", ".md", ".jsonl")
BLOCK = 1 << 23  # bytes read at a time (8 MiB)


@dataclasses.dataclass(frozen=True)
class Source:
  """The files of a corpus and how they are read."""
  path: str  # as the user gave it
  files: tuple[pathlib.Path, ...]
  text_field: str = "text"
  folder: bool = False

  @property
  def several(self) -> bool:
    """Whether it holds several documents (a folder or JSONL): they are
    separated by the end-of-text id, and validation holds out whole ones."""
    return self.folder or any(_is_jsonl(f) for f in self.files)


def _is_jsonl(path: pathlib.Path) -> bool:
  return path.name.endswith((".jsonl", ".jsonl.gz"))


def open_source(path: str, text_field: str = "text") -> Source:
  """The Source `path` names; UserError for a missing path or a folder
  with no text in it."""
  p = pathlib.Path(path).expanduser()
  try:
    if not p.exists():
      raise UserError(f"corpus file not found: {path}; check "
                      "--config.data.path (a text, .gz or .jsonl file, or a "
                      "folder of them)")
    if not p.is_dir():
      p.open("rb").close()
      return Source(path, (p,), text_field)
    files = tuple(sorted(f for f in p.rglob("*") if f.is_file()
                         and f.suffix.lower() in FOLDER_SUFFIXES))
  except OSError as e:  # a name too long, no permission, a lost mount
    fix = ("--config.data.path names a path longer than the file system "
           "allows; move or link the file to a shorter path"
           if e.errno == errno.ENAMETOOLONG else
           "check --config.data.path and the file's permissions")
    raise UserError(f"cannot read the corpus file {path}: "
                    f"{e.strerror or e}; {fix}") from None
  except ValueError:  # a NUL character, which no path can hold
    raise UserError(f"the corpus path {path!r} holds a NUL character; check "
                    "--config.data.path") from None
  if not files:
    raise UserError(f"corpus folder has no text: {path} holds no "
                    f"{', '.join(FOLDER_SUFFIXES)} file; put text files in "
                    "it or name a file with --config.data.path")
  return Source(path, files, text_field, folder=True)


def stat_key(source: Source) -> str:
  """A digest of each file's path, size, modification time and inode: an
  unchanged file keeps it, so a later start need not read the corpus to
  know its content (`content_key`) again."""
  digest = hashlib.sha256()
  for f in source.files:
    s = f.stat()
    digest.update(f"{f.resolve()}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ino}"
                  f"\0".encode())
  digest.update(source.text_field.encode())
  return digest.hexdigest()[:32]


def content_key(source: Source) -> str:
  """SHA-256 over every file's bytes (streamed) and the text field: what
  the token cache is named by, so a changed file makes a new one."""
  digest = hashlib.sha256(f"{source.text_field}\0".encode())
  for f in source.files:
    digest.update(f"{f.name}\0".encode())
    with f.open("rb") as fh:
      while block := fh.read(BLOCK):
        digest.update(block)
  return digest.hexdigest()[:32]


def total_bytes(source: Source) -> int:
  return sum(f.stat().st_size for f in source.files)


def _open(path: pathlib.Path) -> IO[bytes]:
  if path.suffix == ".gz":
    return typing.cast(IO[bytes], gzip.open(path, "rb"))
  return path.open("rb")


def _blocks(path: pathlib.Path) -> Iterator[tuple[int, bytes]]:
  """(offset in the decompressed bytes, block) of a file."""
  offset = 0
  try:
    with _open(path) as fh:
      while block := fh.read(BLOCK):
        yield offset, block
        offset += len(block)
  except (OSError, EOFError) as e:  # a truncated or foreign .gz
    raise UserError(f"cannot read the corpus file {path} ({e}); check it is "
                    "whole (`gzip -t` for a .gz)") from None


def _bad_utf8(path: pathlib.Path, byte: int) -> UserError:
  gz = " (uncompressed)" if path.suffix == ".gz" else ""
  return UserError(f"corpus file is not valid UTF-8 at byte {byte}{gz} of "
                   f"{path}; convert it, e.g. `iconv -t utf-8`")


def _text_blocks(path: pathlib.Path) -> Iterator[str]:
  """The text of a file a block at a time, a leading byte order mark
  dropped; invalid UTF-8 or a NUL byte is a UserError naming the byte."""
  decoder = codecs.getincrementaldecoder("utf-8-sig")()
  for offset, block in _blocks(path):
    nul = block.find(b"\x00")
    if nul >= 0:
      raise UserError(f"corpus file looks binary (a NUL byte at byte "
                      f"{offset + nul}): {path}; give a UTF-8 text file")
    pending = len(decoder.getstate()[0])
    try:
      yield decoder.decode(block)
    except UnicodeDecodeError as e:
      raise _bad_utf8(path, offset - pending + e.start) from None
  try:
    yield decoder.decode(b"", final=True)
  except UnicodeDecodeError as e:
    raise _bad_utf8(path, e.start) from None


def _jsonl_documents(path: pathlib.Path, field: str) -> Iterator[str]:
  """The text field of every line of a JSONL file; blank lines skipped."""
  number, offset, rest = 0, 0, b""
  for start, block in _blocks(path):
    lines = (rest + block).split(b"\n")
    rest = lines.pop()
    for line in lines:
      number += 1
      yield _document(path, field, number, offset, line)
      offset += len(line) + 1
  if rest.strip():
    yield _document(path, field, number + 1, offset, rest)


def _document(path: pathlib.Path, field: str, number: int, offset: int,
              line: bytes) -> str:
  try:
    text = line.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _bad_utf8(path, offset + e.start) from None
  if not text.strip():
    return ""
  try:
    record = json.loads(text)
  except ValueError:
    raise UserError(f"line {number} of {path} is not JSON; each line of a "
                    "JSONL corpus is one object, e.g. {\"text\": \"...\"}"
                    ) from None
  value = record.get(field) if isinstance(record, dict) else None
  if not isinstance(value, str):
    raise UserError(f"line {number} of {path} has no text field {field!r}; "
                    "set --config.data.text_field to the field holding the "
                    "text")
  return value


def pieces(source: Source) -> Iterator[str | None]:
  """The corpus's text in pieces, `None` after each document; documents
  without text are skipped."""
  for f in source.files:
    if _is_jsonl(f):
      for doc in _jsonl_documents(f, source.text_field):
        if doc:
          yield doc
          yield None
      continue
    empty = True
    for text in _text_blocks(f):
      if text:
        empty = False
        yield text
    if not empty:
      yield None

