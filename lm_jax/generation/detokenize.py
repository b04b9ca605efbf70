"""Token ids to text as they come: the one decoder of lm-jax-sample, the
server (completions and chat, streamed or whole), the playground page and a
masked model's continuations.

A byte-level BPE token stands for bytes, not characters: "é" may be two
tokens, "😀" four, and a model may write bytes that never make a
character. So each token adds its bytes (another tokenizer's token: the
text its decoding adds after the tokens before it, since a word
tokenizer's spacing depends on them) to an incremental UTF-8 decoder,
which holds back a character whose bytes are not all out yet and writes
U+FFFD for bytes that can no longer become one. A token is released with
the text it completed once its bytes are all decoded and no stop string
can begin in its text; at a stop string the text ends, whatever token it
began in.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple, Sequence

import numpy as np

# Tokens decoded again before each new one (not byte-level): a word's
# spacing depends on the token before it.
_CONTEXT = 8

Ids = Sequence[int] | np.ndarray  # token ids, a list or an array


def token_bytes(tokenizer, token: int) -> bytes | None:
  """The bytes one token stands for on its own; None: a byte-level
  tokenizer's special token, which has no text."""
  if tokenizer.byte_level:
    return tokenizer.token_bytes(token)
  return tokenizer.decode([token]).encode()


def shown(data: bytes) -> str:
  """`data` as text, or as OpenAI shows a token that is not valid UTF-8 on
  its own (part of a character): `bytes:\\xd0\\xbc`."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def token_text(tokenizer, token: int) -> str:
  """A token's own text (`shown`); a special token's name."""
  data = token_bytes(tokenizer, token)
  return tokenizer.vocab[token] if data is None else shown(data)


class Piece(NamedTuple):
  """One released token: the text it completed (cut at a stop string) and
  the bytes it added."""
  text: str
  data: bytes


class Detokenizer:
  """The text of one stream of token ids, released piece by piece.

  `add` takes the next ids and `finish` ends the stream; each returns the
  tokens released, oldest first, as Pieces whose texts join into the text.
  Every token is decoded a bounded number of times, so a long stream costs
  linear time. `stopped`: a stop string was found; the text ends before it
  and later ids are ignored.
  """

  def __init__(self, tokenizer, prompt: Ids = (),
               stops: Sequence[str] = ()):
    self.tokenizer = tokenizer
    self.context = [int(t) for t in list(prompt)[-_CONTEXT:]]
    self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    self.stops = tuple(s for s in stops if s)
    self.hold = max(map(len, self.stops), default=1) - 1
    self.pending: list[Piece] = []  # added, not yet released
    self.whole = 0  # leading pending tokens whose bytes are all decoded
    self.tail = ""  # the text of `pending`
    self.stopped = False

  def _bytes(self, token: int) -> bytes:
    if self.tokenizer.byte_level:
      return self.tokenizer.token_bytes(token) or b""
    decode, before = self.tokenizer.decode, self.context
    self.context = (before + [token])[-_CONTEXT:]
    return decode(before + [token])[len(decode(before)):].encode()

  def add(self, ids: Ids) -> list[Piece]:
    """Takes the next token ids; returns the tokens released."""
    out = []
    for token in ids:
      if self.stopped:
        break
      data = self._bytes(int(token))
      text = self.utf8.decode(data)
      self.pending.append(Piece(text, data))
      self.tail += text
      if not self.utf8.getstate()[0]:  # no bytes waiting for more
        self.whole = len(self.pending)
      out += self._release(final=False)
    return out

  def finish(self, cut_short: bool = True) -> list[Piece]:
    """Ends the stream: the rest of the text, bytes of a character cut short
    shown as U+FFFD (they belong to the last token); left out if not
    `cut_short` (the command line's text: a length limit that ends inside
    a character shows no half of it)."""
    if self.stopped:
      return []
    rest = self.utf8.decode(b"", final=True) if cut_short else ""
    if rest:
      self.pending[-1] = self.pending[-1]._replace(
          text=self.pending[-1].text + rest)
      self.tail += rest
    self.whole = len(self.pending)
    return self._release(final=True)

  def _release(self, final: bool) -> list[Piece]:
    """The leading pending tokens whose text is settled: up to a stop
    string, else whole and clear of the last `hold` characters."""
    at = [i for i in (self.tail.find(s) for s in self.stops) if i >= 0]
    if at:
      self.stopped = True
      end, ready = min(at), len(self.pending)
    else:
      end, ready = len(self.tail) - (0 if final else self.hold), self.whole
    out, used = [], 0
    for piece in self.pending[:ready]:
      if self.stopped:
        if used >= end:
          break
        piece = piece._replace(text=piece.text[:end - used])
      elif used + len(piece.text) > end:
        break
      out.append(piece)
      used += len(piece.text)
    if self.stopped:
      self.pending, self.tail = [], ""
      return out
    del self.pending[:len(out)]
    self.whole -= len(out)
    self.tail = self.tail[used:]
    return out


def detokenize(tokenizer, ids: Ids, prompt: Ids = (),
               stops: Sequence[str] = (), cut_short: bool = True) -> str:
  """The whole text of `ids` after `prompt`, cut at the first stop string
  (`cut_short`: as `Detokenizer.finish`)."""
  text = Detokenizer(tokenizer, prompt, stops)
  return "".join(p.text for p in text.add(ids) + text.finish(cut_short))
