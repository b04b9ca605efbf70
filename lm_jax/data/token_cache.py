"""Tokenize once: a corpus's token ids in a file on disk, memory-mapped.

The first run of a corpus reads it (lm_jax/data/documents.py) and writes,
in the cache folder (`folder()`: $LM_JAX_CACHE, else
~/.cache/lm_jax/tokens):

- `stat-*.json`: the content key of the files at their current size,
  modification time and inode, so a later start does not read them again;
- `plan-*.json`: where validation begins (a character of a single text,
  or the first held-out document) and the training text's length;
- `tokenizer-*.json`: the tokenizer built from the training text (word and
  BPE vocabularies from its first SAMPLE_CHARS characters at most);
- `ids-*.bin`: a header (MAGIC, then JSON: dtype, lengths, key, SHA-256
  of the ids) and the train ids then the val ids, uint16 where the
  vocabulary fits, else uint32.

Each name holds a digest of everything its content depends on (the files'
bytes, val_fraction, the tokenizer's settings and source code, the
tokenizer itself), so a changed file or setting makes new files and
nothing stale is read. Each file is written under a temporary name and
renamed into place; an `ids` file whose header, key or size is wrong (torn
by a full disk, or another program's) is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import time
from typing import Callable, Iterator, NamedTuple

import numpy as np

from lm_jax import outputs
from lm_jax.data import bpe, documents, tokenizers
from lm_jax.data.documents import Source
from lm_jax.errors import UserError
from lm_jax.special_tokens import EOS_ID

MAGIC = b"LMJAXIDS"
HEADER_BYTES = 4096  # MAGIC, then the JSON header, padded with spaces
SAMPLE_CHARS = 1 << 27  # word and BPE vocabularies learn from at most these
FLUSH_CHARS = 1 << 23  # text tokenized at a time (about 8 M characters)


def folder() -> pathlib.Path:
  """Where the cache lives: $LM_JAX_CACHE, else ~/.cache/lm_jax/tokens."""
  env = os.environ.get("LM_JAX_CACHE")
  return pathlib.Path(env) if env else outputs.cache_dir("tokens")


class Tokens(NamedTuple):
  """A corpus tokenized: ids memory-mapped from the cache file."""
  tokenizer: tokenizers.Tokenizer
  train: np.ndarray  # (N,) np.memmap of uint16 or uint32
  val: np.ndarray
  train_chars: int  # characters of the training text
  source: str  # the corpus and its validation split, for the log
  lines: tuple[str, ...]  # where the cache is, built or reused


def _digest(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()
                        ).hexdigest()[:32]


def fingerprint(tokenizer) -> str:
  """A stable digest of a tokenizer: its kind and saved form."""
  return _digest(tokenizer.kind, tokenizer.to_json())


def _read_json(path: pathlib.Path) -> dict | None:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None


def _write_json(path: pathlib.Path, data: dict) -> None:
  outputs.write_replacing(path, lambda tmp: tmp.write_text(
      json.dumps(data), encoding="utf-8"), flag="LM_JAX_CACHE")


def _content(source: Source) -> str:
  """The content key, from the stat memo or by reading every byte."""
  memo = folder() / f"stat-{documents.stat_key(source)}.json"
  known = _read_json(memo)
  if known and isinstance(known.get("content"), str):
    return known["content"]
  content = documents.content_key(source)
  _write_json(memo, {"content": content, "path": source.path})
  return content


def _plan(source: Source, content: str, val_fraction: float) -> dict:
  """Where validation starts: `cut`, a character of a single text, or
  `first_val`, a document; and the training text's length in characters."""
  path = folder() / f"plan-{_digest(content, val_fraction)}.json"
  plan = _read_json(path)
  if plan is not None:
    return plan
  lengths, current, blank = [], 0, True
  for piece in documents.pieces(source):
    if piece is None:
      lengths.append(current)
      current = 0
    else:
      current += len(piece)
      blank = blank and not piece.strip()
  total = sum(lengths)
  if blank:
    what = "folder" if source.folder else "file"
    size = documents.total_bytes(source)
    if not size:
      raise UserError(f"corpus {what} is empty: {source.path}; give a "
                      f"{what} with text in it")
    raise UserError(f"corpus {what} holds only whitespace ({size} bytes of "
                    f"spaces and line breaks): {source.path}; give a {what} "
                    "with text in it")
  if not source.several:
    cut = int(total * (1.0 - val_fraction))
    plan = dict(cut=cut, train_chars=cut, total_chars=total)
  else:
    if len(lengths) < 2:
      raise UserError(f"corpus {source.path} holds one document: validation "
                      "holds out whole documents, so give at least two (or "
                      "name a single text file, whose last fraction is held "
                      "out)")
    held, first = 0, len(lengths)
    while first > 1 and held < val_fraction * total:
      first -= 1
      held += lengths[first]
    plan = dict(first_val=first, train_chars=total - held, total_chars=total,
                documents=len(lengths))
  _write_json(path, plan)
  return plan


def split_pieces(source: Source, plan: dict
                 ) -> Iterator[tuple[bool, str | None]]:
  """(is validation, piece) of the corpus in order: the training text,
  then the held-out text; `None` after each document."""
  if "cut" in plan:
    seen = 0
    for piece in documents.pieces(source):
      if piece is None:
        continue
      cut = plan["cut"] - seen
      if 0 < cut < len(piece):
        yield False, piece[:cut]
        yield True, piece[cut:]
      else:
        yield cut <= 0, piece
      seen += len(piece)
    return
  doc = 0
  for piece in documents.pieces(source):
    yield doc >= plan["first_val"], piece
    doc += piece is None


def training_text(source: Source, plan: dict, limit: int | None) -> str:
  """The training text, documents joined by line breaks; only its first
  `limit` characters where given."""
  parts, n = [], 0
  for val, piece in split_pieces(source, plan):
    if val or (limit is not None and n >= limit):
      break
    piece = "\n" if piece is None else piece
    parts.append(piece)
    n += len(piece)
  return "".join(parts)[:limit]


def _characters(source: Source, plan: dict) -> str:
  """Every distinct character of the training text, in code point order
  (vectorised: each piece's code points mark a table of them all)."""
  present = np.zeros(0x110000, bool)
  for val, piece in split_pieces(source, plan):
    if val:
      break
    if piece:
      present[np.frombuffer(piece.encode("utf-32-le", "surrogatepass"),
                            np.uint32)] = True
  return "".join(map(chr, np.flatnonzero(present).tolist()))


def _tokenizer(source: Source, content: str, plan: dict, data) -> tuple:
  """The tokenizer of the training text: cached, or built and cached."""
  kind = data.tokenizer
  cls = tokenizers.TOKENIZERS.get(kind)
  if cls is None:
    raise UserError(f"unknown tokenizer {kind!r}: set config.data.tokenizer "
                    f"to one of {sorted(tokenizers.TOKENIZERS)}")
  options = {k: data[k] for k in cls.options if k in data}
  code = [_source_digest(m) for m in (tokenizers, bpe)]
  name = _digest(content, plan, kind, options, source.several, SAMPLE_CHARS,
                 code)
  path = folder() / f"tokenizer-{name}.json"
  if path.exists():
    try:
      return tokenizers.load_tokenizer(path), False
    except (OSError, ValueError, KeyError):
      pass
  if kind == "char":
    text = _characters(source, plan)
  else:
    text = training_text(source, plan, SAMPLE_CHARS)
  tokenizer = tokenizers.build_tokenizer(kind, text, specials=source.several,
                                         **options)
  outputs.write_replacing(path, lambda tmp: tokenizers.save_tokenizer(
      tokenizer, tmp), flag="LM_JAX_CACHE")
  return tokenizer, plan["train_chars"] > SAMPLE_CHARS and kind != "char"


def _source_digest(module) -> str:
  return hashlib.sha256(pathlib.Path(module.__file__).read_bytes()
                        ).hexdigest()[:16]


def id_dtype(vocab_size: int) -> np.dtype:
  """uint16 where every id fits, else uint32."""
  return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def read_header(path: pathlib.Path) -> dict | None:
  """The header of an ids file, or None where it is not one whole."""
  try:
    with path.open("rb") as fh:
      head = fh.read(HEADER_BYTES)
    size = path.stat().st_size
  except OSError:
    return None
  if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
    return None
  try:
    header = json.loads(head[len(MAGIC):].decode("ascii"))
    dtype = np.dtype(header["dtype"])
    n = int(header["train"]) + int(header["val"])
  except (ValueError, KeyError, TypeError):
    return None
  if size != HEADER_BYTES + n * dtype.itemsize:
    return None  # torn: cut short, or more than it says
  return header


def _cut(text: str) -> int:
  """Where `text` may end a chunk without changing its tokens: after its
  last line break between two non-spaces (bpe._CUT); 0: nowhere."""
  at = len(text) - 1
  while (at := text.rfind("\n", 0, at)) > 0:
    if at + 1 < len(text) and not text[at - 1].isspace() and \
        not text[at + 1].isspace():
      return at + 1
  return 0


def _documents_ids(tokenizer, docs: list[str], eos: bool
                   ) -> Iterator[np.ndarray]:
  """The ids of whole documents, each followed by EOS_ID where `eos`:
  many at a time (characters in one vectorised call, BPE through the
  library's parallel batch encoding)."""
  if tokenizer.kind == "char":
    ids = tokenizer.encode("".join(docs))  # one id per character
    if eos:
      ids = np.insert(ids, np.cumsum([len(d) for d in docs]), EOS_ID)
    yield ids
    return
  if isinstance(tokenizer, bpe.BPETokenizer):
    short = [d for d in docs if len(d) <= bpe.CHUNK_CHARS]
    encoded = iter(tokenizer.encode_batch(short))
    parts = [next(encoded) if len(d) <= bpe.CHUNK_CHARS
             else tokenizer.encode(d) for d in docs]
  else:
    parts = [tokenizer.encode(d) for d in docs]
  end = [np.array([EOS_ID], np.int32)] if eos else []
  yield np.concatenate([x for p in parts for x in (p, *end)] or
                       [np.zeros(0, np.int32)])


def _split_ids(tokenizer, pieces: Iterator[str | None], eos: bool
               ) -> Iterator[np.ndarray]:
  """The ids of a split's pieces, tokenized FLUSH_CHARS or so at a time
  at places that leave the tokens as one call on the whole would give
  them; EOS_ID after each document where `eos`."""
  docs: list[str] = []  # whole documents waiting, `waiting` characters
  current: list[str] = []  # the pieces of the document being read
  waiting = size = 0
  for piece in pieces:
    if piece is None:
      docs.append("".join(current))
      waiting += size
      current, size = [], 0
      if waiting >= FLUSH_CHARS:
        yield from _documents_ids(tokenizer, docs, eos)
        docs, waiting = [], 0
      continue
    current.append(piece)
    size += len(piece)
    if size >= FLUSH_CHARS:  # a long document: its head goes now
      if docs:
        yield from _documents_ids(tokenizer, docs, eos)
        docs, waiting = [], 0
      text = "".join(current)
      cut = len(text) if tokenizer.kind == "char" else _cut(text)
      if cut:
        yield tokenizer.encode(text[:cut])
        text = text[cut:]
      current, size = [text], len(text)
  if docs:
    yield from _documents_ids(tokenizer, docs, eos)
  if current:  # the text after a cut (a split of one document)
    yield tokenizer.encode("".join(current))


class _Progress:
  """A line on stderr every few seconds: done, MB/s of text, time left."""

  def __init__(self, total_chars: int, total_bytes: int):
    self.total_chars, self.total_bytes = max(total_chars, 1), total_bytes
    self.start = self.shown = time.perf_counter()
    self.done = 0

  def add(self, chars: int) -> None:
    self.done += chars
    now = time.perf_counter()
    if now - self.shown >= 2.0:
      self.shown = now
      print(self.line(now), file=sys.stderr, flush=True)

  def rate(self, now: float) -> float:
    """MB of the corpus's bytes per second, at the share of text done."""
    share = self.done / self.total_chars
    return self.total_bytes * share / 1e6 / max(now - self.start, 1e-9)

  def line(self, now: float) -> str:
    share = self.done / self.total_chars
    rate = self.rate(now)
    left = (1 - share) * self.total_bytes / 1e6 / max(rate, 1e-9)
    return (f"tokenizing: {share:.0%} of {self.total_bytes / 1e6:,.1f} MB, "
            f"{rate:,.1f} MB/s, about {left:,.0f} s left")


def _write_ids(path: pathlib.Path, source: Source, plan: dict, tokenizer,
               key: str) -> float:
  """Tokenizes the corpus into `path`; returns the rate in MB/s."""
  dtype = id_dtype(tokenizer.vocab_size)
  progress = _Progress(plan["total_chars"], documents.total_bytes(source))
  counts = {False: 0, True: 0}
  digest = hashlib.sha256()

  def pieces(want_val: bool) -> Iterator[str | None]:
    for val, piece in split_pieces(source, plan):
      if val == want_val:
        progress.add(len(piece) if piece else 0)
        yield piece
      elif val:
        return

  def write(tmp: pathlib.Path) -> None:
    with tmp.open("wb") as fh:
      fh.write(b"\0" * HEADER_BYTES)
      for val in (False, True):
        for ids in _split_ids(tokenizer, pieces(val), source.several):
          data = np.ascontiguousarray(ids, dtype).data  # a memoryview
          digest.update(data)
          fh.write(data)
          counts[val] += len(ids)
      header = json.dumps(dict(dtype=dtype.name, train=counts[False],
                               val=counts[True], key=key,
                               sha256=digest.hexdigest(), source=source.path))
      head = MAGIC + header.encode("ascii")
      if len(head) > HEADER_BYTES:
        head = MAGIC + json.dumps(dict(dtype=dtype.name, train=counts[False],
                                       val=counts[True], key=key)).encode()
      fh.seek(0)
      fh.write(head.ljust(HEADER_BYTES, b" "))

  outputs.write_replacing(path, write, flag="LM_JAX_CACHE")
  return progress.rate(time.perf_counter())


def _open_ids(path: pathlib.Path, header: dict
              ) -> tuple[np.ndarray, np.ndarray]:
  """The train and val ids of a checked file, memory-mapped."""
  dtype, n_train = np.dtype(header["dtype"]), int(header["train"])
  train = np.memmap(path, dtype, "r", HEADER_BYTES, (n_train,))
  val = np.memmap(path, dtype, "r", HEADER_BYTES + n_train * dtype.itemsize,
                  (int(header["val"]),))
  return train, val


def load(path: str, data, say: Callable[[str], None] = print) -> Tokens:
  """The corpus `path` tokenized as `data` (config.data) says: from the
  cache, or tokenized into it first."""
  source = documents.open_source(path, data.get("text_field", "text"))
  if not 0.0 < data.val_fraction < 1.0:
    raise UserError(f"config.data.val_fraction must be in (0, 1), got "
                    f"{data.val_fraction}")
  content = _content(source)
  plan = _plan(source, content, data.val_fraction)
  tokenizer, sampled = _tokenizer(source, content, plan, data)
  key = _digest(content, plan, fingerprint(tokenizer))
  ids_path = folder() / f"ids-{key}.bin"
  header = read_header(ids_path)
  lines = []
  if sampled:
    lines.append(f"tokenizer: learnt from the first {SAMPLE_CHARS:,} "
                 f"characters of {plan['train_chars']:,}")
  if header is None or header.get("key") != key:
    if ids_path.exists():
      say(f"token cache {ids_path} is torn or foreign: rebuilding it")
    rate = _write_ids(ids_path, source, plan, tokenizer, key)
    header = read_header(ids_path)
    if header is None:
      raise UserError(f"cannot write the token cache {ids_path}: it reads "
                      "back torn; check the disk has space, or set "
                      "LM_JAX_CACHE to another folder")
    lines.append(f"token cache: tokenized {documents.total_bytes(source) / 1e6:,.1f}"
                 f" MB at {rate:,.1f} MB/s into {ids_path}")
  else:
    lines.append(f"token cache: reused {ids_path}")
  lines[-1] += f" (clear with `rm -r {folder()}`)"
  train, val = _open_ids(ids_path, header)
  return Tokens(tokenizer, train, val, plan["train_chars"],
                describe(source, plan, data.val_fraction), tuple(lines))


def describe(source: Source, plan: dict, val_fraction: float) -> str:
  """The corpus and how validation is held out."""
  if "cut" in plan:
    return f"{source.path} (last {val_fraction:.0%} as val)"
  held = plan["documents"] - plan["first_val"]
  files = f"{len(source.files)} files, " if source.folder else ""
  return (f"{source.path} ({files}{plan['documents']:,} documents, the last "
          f"{held:,} as val)")
