"""Paired data for encoder-decoder models: (prompt, reply) strings and ids.

Two sources. A tab-separated UTF-8 file of `prompt<TAB>reply` lines (any
script; `config.data.pairs_file`), whose last `val_fraction` of lines is
held out; or the lines of any text (the built-in plays by default) turned
into pairs by named transformations, mixed with weights
(`config.data.pairs = "copy:1,reverse:1"`): held-out pairs come from the
held-out text only, never from training lines.

Lines that cannot be a pair (no tab, an empty side, longer than the model
takes) are counted by reason (`Skipped`) and reported in one line, never
silently dropped. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from lm_jax.errors import UserError

Pair = tuple[str, str]  # (prompt, reply)

# swap_persons: first and second person, both ways. "you" becomes "me" as
# an object (after a preposition, before a determiner, or last in its
# clause) and "I" otherwise; "are" becomes "am" only after a "you" that
# became "I". A heuristic, but a fixed function of the words around.
_SWAPS = {"i": "you", "me": "you", "my": "your", "your": "my", "mine": "yours",
          "yours": "mine", "myself": "yourself", "yourself": "myself",
          "am": "are"}
_PREPOSITIONS = frozenset(
    "to for with of at on upon from by unto than against without like "
    "about before after into".split())
_DETERMINERS = frozenset(
    "the a an my your his her its our their this that these those thy no "
    "all some".split())
_WORD = re.compile(r"[A-Za-z]+|[^A-Za-z]+")
# A speaker's heading in the plays' layout (`HIPPOLYTA:`), not a line.
_SPEAKER = re.compile(r"^[A-Z][A-Z .'\-]*:$")


def _cased(word: str, like: str, sentence_start: bool) -> str:
  """`word` in the casing of `like`: all caps, capitalised, or lower.

  "I" says nothing about its casing (it is always a capital): the new
  word is capitalised only where a sentence starts.
  """
  if like == "I":
    return word.capitalize() if sentence_start else word
  if len(like) > 1 and like.isupper():
    return word.upper()
  if like[0].isupper():
    return word.capitalize()
  return word


def swap_persons(text: str) -> str:
  """I <-> you, my <-> your, me -> you, am -> are, in the text's casing.

  "I am tired of my work" -> "You are tired of your work";
  "you are kind to me" -> "I am kind to you".
  """
  parts = _WORD.findall(text)
  words = [i for i, p in enumerate(parts) if p[0].isalpha()]
  out = list(parts)
  became_i = set()
  for n, i in enumerate(words):
    word, low = parts[i], parts[i].lower()
    before = "".join(parts[words[n - 1] + 1:i]) if n else ""
    start = n == 0 or any(c in before for c in ".!?")
    if low == "you":
      last = n + 1 == len(words) or any(
          c in "".join(parts[i + 1:words[n + 1]]) for c in ",;:.!?")
      nxt = "" if last else parts[words[n + 1]].lower()
      prev = parts[words[n - 1]].lower() if n else ""
      subject = not (prev in _PREPOSITIONS or nxt in _DETERMINERS
                     or (last and not start))
      out[i] = "I" if subject else _cased("me", word, start)
      if subject:
        became_i.add(n)
    elif low == "are" and n - 1 in became_i:
      out[i] = _cased("am", word, start)
    elif low in _SWAPS:
      out[i] = _cased(_SWAPS[low], word, start)
  return "".join(out)


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "reverse_words": lambda s: " ".join(s.split(" ")[::-1]),
    "swap_persons": swap_persons,
    "upper": str.upper,
}


def parse_mix(spec: str) -> dict[str, float]:
  """"copy:1,reverse:2" -> {"copy": 1.0, "reverse": 2.0}; a bare name
  weighs 1. Raises UserError naming a bad entry."""
  mix = {}
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    name, _, weight = entry.partition(":")
    if name not in TRANSFORMS:
      raise UserError(f"unknown transformation {name!r} in config.data.pairs"
                      f"={spec!r}: choose from {sorted(TRANSFORMS)}")
    try:
      mix[name] = float(weight) if weight else 1.0
    except ValueError:
      mix[name] = -1.0
    if not mix[name] > 0 or mix[name] == float("inf"):
      raise UserError(f"config.data.pairs={spec!r}: the weight of {name!r} "
                      f"must be a positive number, e.g. {name}:1")
  if not mix:
    raise UserError("config.data.pairs is empty: name at least one "
                    f"transformation, e.g. copy:1 (of {sorted(TRANSFORMS)})")
  return mix


def text_lines(text: str) -> list[str]:
  """The lines of `text` worth pairing: stripped, non-empty, not a
  speaker's heading."""
  lines = (line.strip() for line in text.splitlines())
  return [line for line in lines if line and not _SPEAKER.match(line)]


def transform_pairs(lines: list[str], mix: dict[str, float], seed: int
                    ) -> list[Pair]:
  """One pair per line, its transformation drawn by weight (seeded)."""
  names = list(mix)
  weights = np.array([mix[n] for n in names])
  weights = weights / weights.max()  # huge weights would overflow the sum
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(names), size=len(lines), p=weights / weights.sum())
  return [(line, TRANSFORMS[names[k]](line)) for line, k in zip(lines, picks)]


@dataclasses.dataclass
class Skipped:
  """Lines that could not be pairs, by reason."""
  counts: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)

  def add(self, reason: str) -> None:
    self.counts[reason] += 1

  def line(self, what: str) -> str:
    """One line for the log: "train pairs: skipped 3 lines (no tab: 2, ...)"."""
    total = sum(self.counts.values())
    if not total:
      return f"{what}: no line skipped"
    reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(self.counts.items()))
    return f"{what}: skipped {total:,} line(s) ({reasons})"


def split_tsv(text: str, skipped: Skipped) -> list[Pair]:
  """The (prompt, reply) of each `prompt<TAB>reply` line; blank lines are
  no pairs and not counted. A reply may itself hold tabs."""
  pairs = []
  for line in text.splitlines():
    if not line.strip():
      continue
    prompt, tab, reply = line.partition("\t")
    if not tab:
      skipped.add("no tab")
    elif not prompt.strip() or not reply.strip():
      skipped.add("empty side")
    else:
      pairs.append((prompt.strip(), reply.strip()))
  return pairs


def split_lines(text: str, val_fraction: float, source: str = "the text"
                ) -> tuple[str, str]:
  """The first (1 - val_fraction) of the lines for training, the rest val:
  no line is cut in two. Too few lines for both is a UserError naming
  `source`."""
  if not 0.0 < val_fraction < 1.0:
    raise UserError(f"config.data.val_fraction must be in (0, 1), got "
                    f"{val_fraction}")
  lines = text.splitlines()
  cut = int(len(lines) * (1.0 - val_fraction))
  if not 0 < cut < len(lines):
    part = "training" if cut == 0 else "held-out"
    raise UserError(
        f"{source} has {len(lines)} line(s): holding out the last "
        f"{val_fraction:.0%} of lines (config.data.val_fraction) leaves no "
        f"{part} line; give more lines")
  return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def vocabulary_text(pairs: Iterable[Pair]) -> str:
  """The text a shared tokenizer of prompts and replies is built from."""
  return "\n".join(f"{p}\n{r}" for p, r in pairs)


def encode_pairs(pairs: list[Pair], tokenizer: Tokenizer, max_source_len: int,
                 max_target_len: int, skipped: Skipped
                 ) -> tuple[np.ndarray, np.ndarray]:
  """src (N, S) and tgt (N, T + 2) int32 of the pairs that fit.

  src: the prompt's ids, right-padded with PAD_ID to S = max_source_len.
  tgt: BOS, the reply's ids, EOS, PAD to T = max_target_len reply tokens.
  A side with no tokens counts as "empty side", a longer one as "too long".
  """
  S, T = max_source_len, max_target_len
  src, tgt = [], []
  for prompt, reply in pairs:
    p, r = tokenizer.encode(prompt), tokenizer.encode(reply)
    if not len(p) or not len(r):
      skipped.add("empty side")
    elif len(p) > S or len(r) > T:
      skipped.add(f"too long (prompt > {S} or reply > {T} tokens)")
    else:
      src.append(np.pad(p, (0, S - len(p)), constant_values=PAD_ID))
      tgt.append(np.pad(np.concatenate([[BOS_ID], r, [EOS_ID]]),
                        (0, T - len(r)), constant_values=PAD_ID))
  if not src:
    return (np.zeros((0, S), np.int32), np.zeros((0, T + 2), np.int32))
  return np.stack(src).astype(np.int32), np.stack(tgt).astype(np.int32)


def get_batch(data: tuple[jax.Array, jax.Array], key: jax.Array,
              batch_size: int, seq_len: int = 0
              ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
  """Random pairs: inputs (src (B, S), decoder inputs (B, T)) and targets
  (B, T), T = max_target_len + 1 (teacher forcing: the targets are the
  decoder inputs shifted by one). `seq_len` is unused (a text's window)."""
  src, tgt = data  # (N, S), (N, T + 1)
  rows = jax.random.randint(key, (batch_size,), 0, src.shape[0])  # (B,)
  tgt = jnp.take(tgt, rows, axis=0)
  return (jnp.take(src, rows, axis=0), tgt[:, :-1]), tgt[:, 1:]


def target_weights(targets: jax.Array) -> jax.Array:
  """1 for each target (B, T) that is a reply token or EOS, 0 for PAD: the
  loss (`lm_jax/training/losses.py`) counts only the former."""
  return (targets != PAD_ID).astype(jnp.float32)


def reply_ids(ids: np.ndarray) -> np.ndarray:
  """A decoded row's reply: the ids before the first EOS (or PAD)."""
  ids = np.asarray(ids)
  end = np.flatnonzero((ids == EOS_ID) | (ids == PAD_ID))
  return ids[:end[0]] if len(end) else ids


@dataclasses.dataclass(frozen=True)
class PairSplits:
  """Train and held-out pairs, lines skipped reading them, their source."""
  train: list[Pair]
  val: list[Pair]
  skipped: Skipped
  source: str


def load_pairs(data, seed: int) -> PairSplits:
  """The pairs `config.data` names: a TSV file (`pairs_file`), else the
  text of `path` (empty: the built-in plays) transformed by `pairs`."""
  from lm_jax.data import corpus  # corpus reads files; pairs stays pure above
  skipped = Skipped()
  if data.pairs_file:
    train_text, val_text = split_lines(
        corpus.read_text_file(data.pairs_file, "--config.data.pairs_file",
                              "pairs"), data.val_fraction, data.pairs_file)
    train, val = split_tsv(train_text, skipped), split_tsv(val_text, skipped)
    source = f"{data.pairs_file} (last {data.val_fraction:.0%} of lines as val)"
  else:
    mix = parse_mix(data.pairs)
    if not corpus.is_builtin(data.path):  # whole lines held out
      train_text, val_text = split_lines(corpus.read_text_file(data.path),
                                         data.val_fraction, data.path)
      where = f"{data.path} (last {data.val_fraction:.0%} of lines as val)"
    else:
      text = corpus.load_builtin(tuple(data.val_plays))
      train_text, val_text, where = text.train, text.val, text.source
    train = transform_pairs(text_lines(train_text), mix, seed)
    val = transform_pairs(text_lines(val_text), mix, seed + 1)
    source = f"{where}, lines as pairs: {data.pairs}"
  if not train or not val:
    raise UserError(
        f"no valid {'training' if not train else 'held-out'} pair in "
        f"{data.pairs_file or data.path or 'the built-in plays'} "
        f"({skipped.line('pairs')}); give lines of the form prompt<TAB>reply")
  return PairSplits(train, val, skipped, source)
