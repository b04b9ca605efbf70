"""The "pairs" task: a reply given a prompt (encoder-decoders)."""

from __future__ import annotations

import functools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data import corpus, pairs, tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import beam as beam_lib
from lm_jax.generation import interactive, replies, sampling
from lm_jax.runs import rundir
from lm_jax.tasks.base import Can, Loaded, opening, spells, Task
from lm_jax.training import losses, steps


@functools.partial(jax.jit, static_argnames=("model",))
def pair_scores(params, model, src, tgt) -> dict:  # (B, S), (B, T + 1)
  """Teacher-forced sums over the non-PAD targets: loss (nats), tokens
  predicted right (argmax), targets."""
  targets = tgt[:, 1:]
  logits = model.apply({"params": params}, src, tgt[:, :-1])  # (B, T, V)
  weights = pairs.target_weights(targets)
  sums = losses.loss_sums(logits, targets, weights)
  right = (jnp.argmax(logits, -1) == targets) * weights
  return dict(nats=sums.nats, right=right.sum(), targets=sums.weight)


def english_only_note(data, train: list) -> str:
  """A line when the pairs mix in swap_persons, which swaps English
  pronouns only (I/you, my/your), on a text that does not look English
  (under half its letters Latin): there its pairs are mostly copies."""
  if data.get("pairs_file") or "swap_persons" not in pairs.parse_mix(
      data.pairs):
    return ""
  letters = [c for prompt, _ in train[:2000] for c in prompt if c.isalpha()]
  latin = sum(c.isascii() for c in letters) / max(len(letters), 1)
  if latin >= 0.5:
    return ""
  return (f"note: swap_persons swaps English pronouns only (I/you, "
          f"my/your); this text's letters are {1 - latin:.0%} non-Latin, so "
          "its swap_persons pairs are copies: choose copy, reverse or "
          "reverse_words (docs/SEQ2SEQ.md)")


class PairsTask(Task):
  """Replies to prompts (`lm_jax.data.pairs`): val loss and bits per character
  of the replies, token accuracy (teacher-forced) and exact match of the
  greedy reply; a few held-out prompts and their replies."""
  can = frozenset({Can.REPLY, Can.INTERACTIVE})
  # Random (prompt, reply) rows; PAD targets weigh nothing.
  objective = steps.Objective(pairs.get_batch, pairs.target_weights)
  does = "answers it"
  example_prompt = "I am tired of my work"
  # Greedy: a sampled reply drifts from the one answer wanted (an echo).
  sample_flags = "--temperature=0"

  def example(self, config, tokenizer) -> str:
    """The hint's prompt: on the learner's own lines or pairs the first
    held-out pair's prompt; on the built-in plays example_prompt where
    the vocabulary spells it and it fits the encoder (else the first
    training pair's prompt)."""
    d = config.data
    own = d.get("pairs_file") or not corpus.is_builtin(d.path)
    fits = len(tokenizer.encode(self.example_prompt)
               ) <= config.model.max_source_len
    if not own and fits and spells(tokenizer, self.example_prompt):
      return self.example_prompt
    try:
      splits = pairs.load_pairs(d, config.seed)
    except (UserError, OSError):  # a run moved away from its text
      return self.example_prompt
    first = (splits.val if own else splits.train)[0][0]
    return opening(first, words=len(first.split()),
                   chars=config.model.max_source_len)

  def load(self, config, workdir: pathlib.Path) -> Loaded:
    """Pairs -> one tokenizer (with PAD, BOS, EOS) -> padded id arrays."""
    d, m = config.data, config.model
    splits = pairs.load_pairs(d, config.seed)
    tokenizer = tokenizers.build_tokenizer(
        d.tokenizer, pairs.vocabulary_text(splits.train), specials=True, **d)
    rundir.check_resumable(workdir, config, tokenizer)
    skipped = {"train": pairs.Skipped(), "val": pairs.Skipped()}
    arrays = {name: pairs.encode_pairs(
        getattr(splits, name), tokenizer, m.max_source_len, m.max_target_len,
        skipped[name]) for name in skipped}
    for name, (src, _) in arrays.items():
      if not len(src):
        raise UserError(
            f"no {name} pair fits the model ({skipped[name].line(name)}); "
            "raise config.model.max_source_len / max_target_len or give "
            "shorter lines")
    src, tgt = arrays["val"]
    # Whole batches (one compiled shape), unless fewer pairs than a batch.
    B = config.train.batch_size
    n = min(len(src), config.train.eval_pairs)
    n = max(n // B * B, min(B, len(src)))
    val = dict(src=src[:n], tgt=tgt[:n])
    lines: tuple[str, ...] = (
        f"pairs: {splits.source}: {len(arrays['train'][0]):,} train / "
        f"{len(src):,} val pairs ({n:,} evaluated), vocab "
        f"{tokenizer.vocab_size}",
        splits.skipped.line("reading pairs"),
        skipped["train"].line("train pairs"),
        skipped["val"].line("val pairs"))
    note = english_only_note(d, splits.train)
    lines += (note,) if note else ()
    return Loaded(tokenizer, arrays["train"], val, lines)

  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]:
    """Loss, bits per character and token accuracy teacher-forced; exact
    match of the greedy replies; the first `sample_pairs` prompts with
    their replies. bpc spreads the nats of every target (EOS included)
    over the characters of the reference replies."""
    val, tokenizer = loaded.val, loaded.tokenizer
    B = config.train.batch_size
    totals = dict(nats=0.0, right=0, targets=0)
    exact, chars = 0, 0
    greedy = sampling.SamplingOptions(max_new_tokens=model.max_target_len,
                                      temperature=0.0)
    shown: list[str] = []
    for i in range(0, len(val["src"]), B):
      src, tgt = val["src"][i:i + B], val["tgt"][i:i + B]
      for k, v in pair_scores(params, model, src, tgt).items():
        totals[k] += v.item()
      got = np.asarray(replies.generate(params, model, src,
                                        jax.random.key(0), greedy))
      for prompt, reply, want in zip(src, got, tgt[:, 1:]):
        want, reply = pairs.reply_ids(want), pairs.reply_ids(reply)
        exact += int(np.array_equal(reply, want))
        chars += len(tokenizer.decode(want))
        if len(shown) < config.train.sample_pairs:
          shown.append(f"> {tokenizer.decode(pairs.reply_ids(prompt))}\n"
                       f"{tokenizer.decode(reply)}")
    n = len(val["src"])
    val_loss = totals["nats"] / totals["targets"]
    record = dict(step=step, val_loss=val_loss,
                  val_bpc=totals["nats"] / (chars * math.log(2)),
                  val_token_accuracy=totals["right"] / totals["targets"],
                  val_exact_match=exact / n)
    lines = [f"eval step {step} | val loss {val_loss:.4f} nats/token | "
             f"{record['val_bpc']:.4f} bpc | token accuracy "
             f"{record['val_token_accuracy']:.2%} | exact match "
             f"{record['val_exact_match']:.2%} of {n}"]
    return record, lines, {"sample": "\n".join(shown)} if shown else {}

  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None:
    """Prints the model's reply (one a line; `stop` has no use here); with
    `beam` > 0 the best reply of a beam search that wide
    (`lm_jax.generation.beam.beam_replies`) and its log-probability."""
    if beam:
      [(text, score)] = beam_lib.beam_replies(run.params, run.model,
                                              run.tokenizer, [prompt], beam)
      print(text)
      print(f"(beam {beam}: log-probability {score:.3f})", file=sys.stderr)
      return
    for text in replies.reply(run.params, run.model, run.tokenizer,
                              [prompt] * num_samples, key, options):
      print(text)

  def responder(self, run: rundir.Run, stop: str, beam: int = 0
                ) -> interactive.Respond:
    return lambda line, options, key: self.sample(run, line, key, options,
                                                  1, stop, beam)
