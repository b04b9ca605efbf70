"""The "text" task: next-token prediction on a corpus (language models)."""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data import corpus, tokenizers, windows
from lm_jax.errors import UserError
from lm_jax.generation import interactive, sampling, scoring
from lm_jax.runs import rundir
from lm_jax.tasks.base import (bits_per_char, Can, encode_splits, Loaded,
                               opening, refuse_beam, spells, Task)
from lm_jax.training import steps

SAMPLES = "a language model samples"  # what it does instead of --beam


def perplexity(nats_per_token: float) -> float:
  """e to the loss; infinite past float's range (a loss that is huge but
  finite, early in a run at a far too high learning rate)."""
  try:
    return math.exp(nats_per_token)
  except OverflowError:
    return math.inf


class TextTask(Task):
  """Next-token prediction on a corpus; val loss, bits per char, a sample."""
  can = frozenset({Can.CONTINUE, Can.INTERACTIVE, Can.SCORE})
  objective = steps.NEXT_TOKEN
  does = "continues it"
  example_prompt = "ROMEO:"  # in the command printed after training
  sample_flags = ""

  def example(self, config, tokenizer) -> str:
    """The hint's prompt: example_prompt where the run's vocabulary spells
    it, else the start of the first line of its training text."""
    if spells(tokenizer, self.example_prompt):
      return self.example_prompt
    text = corpus.load_corpus(config.data.path, config.data.val_fraction,
                              tuple(config.data.val_plays)).train
    line = next((l for l in text.splitlines() if l.strip()), "")
    return opening(line) or self.example_prompt

  def load(self, config, workdir: pathlib.Path) -> Loaded:
    """Corpus -> tokenizer -> (train, val) ids; refuses a mismatched resume.

    The tokenizer is built from the training text on every start; resuming
    needs it to equal the one stored in `workdir`.
    """
    text = corpus.load_corpus(config.data.path, config.data.val_fraction,
                              tuple(config.data.val_plays))
    tokenizer = tokenizers.build_tokenizer(config.data.tokenizer, text.train,
                                           **config.data)
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
    train_ids, val_ids = encode_splits(tokenizer, text, t)
    val_x, val_y = windows.eval_batches(val_ids, t.batch_size, t.seq_len,
                                     t.eval_tokens)
    unk_rate = float(np.mean(val_ids == tokenizers.UNK_ID))
    # Bits per character: nats over the characters the targets stand for.
    val = dict(x=val_x, y=val_y, chars=tokenizer.covered_chars(val_x, val_y),
               unk_rate=unk_rate)
    unk = (f"no {tokenizers.UNK} (byte-level: every text encodes)"
           if tokenizer.byte_level
           else f"{unk_rate:.2%} of val tokens {tokenizers.UNK}")
    line = (f"corpus: {text.source}: {len(train_ids):,} train / "
            f"{len(val_ids):,} val tokens, "
            f"{len(train_ids) / max(len(text.train), 1):.3f} tokens per "
            f"character, vocab {tokenizer.vocab_size}, {unk}")
    return Loaded(tokenizer, train_ids, val, (line,))

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
      texts["sample"] = tokenizer.decode(np.concatenate([prompt[0], ids[0]]))
    return record, lines, texts

  def score(self, run: rundir.Run, texts: Sequence[Sequence[int]],
            top: int = 0, following: bool = False) -> list[scoring.Scored]:
    """Each token's log-probability given those before it (the first has
    none), one forward pass over the batch: `scoring.score`."""
    return scoring.score(run.params, run.model, texts, top, following)

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
