"""The "text" task: next-token prediction on a corpus (language models)."""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data import corpus, documents, token_cache, tokenizers, windows
from lm_jax.errors import UserError
from lm_jax.generation import detokenize, interactive, sampling, scoring
from lm_jax.runs import rundir
from lm_jax.tasks.base import (bits_per_char, Can, check_splits, encode_splits,
                               Loaded, opening, refuse_beam, spells, Task)
from lm_jax.training import steps

SAMPLES = "a language model samples"  # what it does instead of --beam


def perplexity(nats_per_token: float) -> float:
  """e to the loss; infinite past float's range (a loss that is huge but
  finite, early in a run at a far too high learning rate)."""
  try:
    return math.exp(nats_per_token)
  except OverflowError:
    return math.inf


def _opening_text(config) -> str:
  """The start of the training text (its first block of a file)."""
  d = config.data
  if corpus.is_builtin(d.path):
    return corpus.load_corpus(d.path, d.val_fraction,
                              tuple(d.val_plays)).train[:1 << 16]
  source = documents.open_source(d.path, d.get("text_field", "text"))
  return next((p for p in documents.pieces(source) if p and p.strip()), "")


def _share(ids: np.ndarray, token: int, block: int = 1 << 24) -> float:
  """The share of `ids` equal to `token`, a block at a time (a memmap is
  not read into memory whole)."""
  hits = sum(int(np.count_nonzero(ids[i:i + block] == token))
             for i in range(0, len(ids), block))
  return hits / max(len(ids), 1)


class TextTask(Task):
  """Next-token prediction on a corpus; val loss, bits per char, a sample."""
  can = frozenset({Can.CONTINUE, Can.INTERACTIVE, Can.SCORE})
  objective = steps.NEXT_TOKEN
  does = "continues it"
  example_prompt = "ROMEO:"  # in the command printed after training
  sample_flags = ""

  streams = True  # windows read per chunk from the (cached) token ids

  def example(self, config, tokenizer) -> str:
    """The hint's prompt (the sample command's, the page's default): on
    the learner's own text the start of its first line (of the text's
    first block: a big corpus is not read) that the vocabulary spells; on
    the built-in plays example_prompt; example_prompt too where the text is
    no longer there."""
    if (corpus.is_builtin(config.data.path)
        and spells(tokenizer, self.example_prompt)):
      return self.example_prompt
    try:
      text = _opening_text(config)
    except (UserError, OSError):  # a run moved away from its text
      return self.example_prompt
    for line in text.splitlines()[:1000]:
      start = opening(line)
      if start and spells(tokenizer, start):
        return start
    return self.example_prompt

  def load(self, config, workdir: pathlib.Path) -> Loaded:
    """Corpus -> tokenizer -> (train, val) ids; refuses a mismatched resume.

    A corpus on disk is tokenized once into the token cache
    (lm_jax/data/token_cache.py) and its ids memory-mapped from there;
    the built-in one is tokenized in memory on every start. Resuming needs
    the tokenizer to equal the one stored in `workdir`.
    """
    d, t = config.data, config.train
    if corpus.is_builtin(d.path):
      text = corpus.load_corpus(d.path, d.val_fraction, tuple(d.val_plays))
      tokenizer = tokenizers.build_tokenizer(d.tokenizer, text.train, **d)
      self._check(config, workdir, tokenizer)
      train_ids, val_ids = encode_splits(tokenizer, text, t)
      train_chars, source = len(text.train), text.source
      notes: tuple[str, ...] = ()
    else:
      tokens = token_cache.load(d.path, d)
      tokenizer, train_ids, val_ids = tokens.tokenizer, tokens.train, tokens.val
      self._check(config, workdir, tokenizer)
      check_splits(train_ids, val_ids, t)
      train_chars, source, notes = (tokens.train_chars, tokens.source,
                                    tokens.lines)
    val_x, val_y = windows.eval_batches(val_ids, t.batch_size, t.seq_len,
                                        t.eval_tokens)
    unk_rate = _share(val_ids, tokenizers.UNK_ID)
    # Bits per character: nats over the characters the targets stand for.
    val = dict(x=val_x, y=val_y, chars=tokenizer.covered_chars(val_x, val_y),
               unk_rate=unk_rate)
    unk = (f"no {tokenizers.UNK} (byte-level: every text encodes)"
           if tokenizer.byte_level
           else f"{unk_rate:.2%} of val tokens {tokenizers.UNK}")
    line = (f"corpus: {source}: {len(train_ids):,} train / "
            f"{len(val_ids):,} val tokens, "
            f"{len(train_ids) / max(train_chars, 1):.3f} tokens per "
            f"character, vocab {tokenizer.vocab_size}, {unk}")
    return Loaded(tokenizer, train_ids, val, (line, *notes))

  def _check(self, config, workdir: pathlib.Path, tokenizer) -> None:
    """Refuses a mismatched resume, a vocabulary of `<unk>` alone and a
    sample prompt the vocabulary cannot spell."""
    rundir.check_resumable(workdir, config, tokenizer)
    if tokenizer.vocab_size < 2:
      raise UserError(
          f"the vocabulary holds only {tokenizers.UNK}: no token of the "
          f"training text occurs config.data.min_count="
          f"{config.data.get('min_count')} times; lower config.data.min_count")
    t = config.train
    if t.sample_tokens > 0:
      try:
        tokenizers.encode_prompt(tokenizer, t.sample_prompt)
      except UserError as e:
        raise UserError(f"config.train.sample_prompt="
                        f"{t.sample_prompt!r}: {e}") from None

  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]:
    """Val loss, perplexity, bits per character; a sample of the model.

    val_loss is nats per token; bits per character spreads the same total
    over the characters the targets cover (docs/WORD_LEVEL.md, "Metrics").
    Returns the record, the lines to print and the texts to log.
    """
    val, tokenizer = loaded.val, loaded.tokenizer
    val_loss = steps.evaluate(params, model, val["x"], val["y"])
    bpc = bits_per_char(val_loss, val["y"].size, val["chars"])
    record = dict(step=step, val_loss=val_loss, val_bpc=bpc,
                  val_ppl=perplexity(val_loss), val_unk_rate=val["unk_rate"])
    lines = [f"eval step {step} | val loss {val_loss:.4f} nats/token | ppl "
             f"{record['val_ppl']:.2f} | {bpc:.4f} bpc"]
    texts = {}
    t = config.train
    if t.sample_tokens > 0:
      opts = sampling.SamplingOptions(max_new_tokens=t.sample_tokens,
                                      temperature=0.8)
      prompt = tokenizer.encode(t.sample_prompt)[None, :]
      ids = sampling.generate(params, model, jnp.asarray(prompt),
                              jax.random.key(step), opts)
      # Whole characters: none cut short by sample_tokens (U+FFFD).
      texts["sample"] = tokenizer.decode(prompt[0]) + detokenize.detokenize(
          tokenizer, ids[0], prompt[0], cut_short=False)
    return record, lines, texts

  def score(self, run: rundir.Run, texts: Sequence[Sequence[int]],
            top: int = 0) -> list[scoring.Scored]:
    """Each token's log-probability given those before it (the first has
    none), one forward pass over the batch: `scoring.score`."""
    return scoring.score(run.params, run.model, texts, top)

  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None:
    """Prints the prompt and its continuation (streamed if one sample)."""
    refuse_beam(beam, SAMPLES)
    tokenizer = run.tokenizer
    ids, notice = tokenizers.encode_prompt(tokenizer, prompt)
    if notice:
      print(f"note: {notice}", file=sys.stderr)
    show = lambda text: print(text, end="", flush=True)
    shown = interactive.shown_prompt(tokenizer, prompt)
    if num_samples == 1:  # one sample is streamed as it is produced
      show(shown)
    texts = sampling.generate_text(
        run.params, run.model, tokenizer, ids, key, options,
        num_samples=num_samples, stop=stop,
        on_text=show if num_samples == 1 else None)
    if num_samples == 1:
      print()
      return
    for i, text in enumerate(texts):
      print(f"---------- sample {i + 1} ----------")
      print(shown + text)

  def responder(self, run: rundir.Run, stop: str, beam: int = 0
                ) -> interactive.Respond:
    refuse_beam(beam, SAMPLES)
    return interactive.continuation(run.params, run.model, run.tokenizer, stop)
