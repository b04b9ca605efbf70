"""What the trainer does around the train steps, for each kind of data.

A model class names the task it serves (`Model.task`): "text" (the next
token of running text: language models) or "pairs" (a reply to a prompt:
encoder-decoders). The task loads the data and the tokenizer, hands the
train steps their data (`steps.OBJECTIVES` draws the batches and scores
them), and evaluates: the trainer holds one code path for both.
"""

from __future__ import annotations

import functools
import math
import pathlib
import sys
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm_jax import beam as beam_lib
from lm_jax import corpus, data, interactive, pairs, replies, rundir
from lm_jax import sampling, steps, tokenizers
from lm_jax.errors import UserError
from lm_jax.models import model_class


class Loaded(NamedTuple):
  """A task's data: the tokenizer, the training data the train steps draw
  batches from (an array pytree, put on device), what evaluation reads,
  and lines describing it for the log."""
  tokenizer: tokenizers.Tokenizer
  train: Any
  val: Any
  lines: tuple[str, ...]


class Task(Protocol):
  does: str  # what the model does to a phrase, for the prompt loop's help
  example_prompt: str

  def load(self, config, workdir: pathlib.Path) -> Loaded: ...
  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]: ...
  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None: ...
  def responder(self, run: rundir.Run, stop: str) -> interactive.Respond: ...


def bits_per_char(nats_per_token: float, num_tokens: int,
                  num_chars: int) -> float:
  """The total loss in bits, spread over the characters the tokens cover."""
  return nats_per_token * num_tokens / (num_chars * math.log(2))


class TextTask:
  """Next-token prediction on a corpus; val loss, bits per char, a sample."""
  does = "continues it"
  example_prompt = "ROMEO:"  # in the command printed after training

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
    train_ids = tokenizer.encode(text.train)
    val_ids = tokenizer.encode(text.val)
    need = data.min_tokens(t.batch_size, t.seq_len)
    for name, ids in (("training", train_ids), ("validation", val_ids)):
      if len(ids) < need:
        raise UserError(
            f"the {name} text has {len(ids)} tokens, fewer than one batch "
            f"needs ({t.batch_size} x {t.seq_len} + 1 = {need}); use a "
            "longer text or lower config.train.batch_size / "
            "config.train.seq_len")
    val_x, val_y = data.eval_batches(val_ids, t.batch_size, t.seq_len,
                                     t.eval_tokens)
    unk_rate = float(np.mean(val_ids == tokenizers.UNK_ID))
    # Bits per character: nats over the characters the targets stand for.
    val = dict(x=val_x, y=val_y, chars=tokenizer.covered_chars(val_x, val_y),
               unk_rate=unk_rate)
    line = (f"corpus: {text.source}: {len(train_ids):,} train / "
            f"{len(val_ids):,} val tokens, vocab {tokenizer.vocab_size}, "
            f"{unk_rate:.2%} of val tokens {tokenizers.UNK}")
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
                  val_ppl=math.exp(val_loss), val_unk_rate=val["unk_rate"])
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

  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None:
    """Prints the prompt and its continuation (streamed if one sample)."""
    if beam:
      raise UserError("--beam searches an encoder-decoder's best reply; a "
                      "language model samples: drop --beam")
    tokenizer = run.tokenizer
    ids, notice = tokenizers.encode_prompt(tokenizer, prompt)
    if notice:
      print(f"note: {notice}", file=sys.stderr)
    show = lambda text: print(text, end="", flush=True)
    if num_samples == 1:  # one sample is streamed as it is produced
      show(tokenizer.decode(ids))
    texts = sampling.generate_text(
        run.params, run.model, tokenizer, ids, key, options,
        num_samples=num_samples, stop=stop,
        on_text=show if num_samples == 1 else None)
    if num_samples == 1:
      print()
      return
    for i, text in enumerate(texts):
      print(f"---------- sample {i + 1} ----------")
      print(tokenizer.decode(ids) + text)

  def responder(self, run: rundir.Run, stop: str) -> interactive.Respond:
    return interactive.continuation(run.params, run.model, run.tokenizer, stop)


@functools.partial(jax.jit, static_argnames=("model",))
def pair_scores(params, model, src, tgt) -> dict:  # (B, S), (B, T + 1)
  """Teacher-forced sums over the non-PAD targets: loss (nats), tokens
  predicted right (argmax), targets."""
  targets = tgt[:, 1:]
  logits = model.apply({"params": params}, src, tgt[:, :-1])  # (B, T, V)
  weights = targets != tokenizers.PAD_ID
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  right = jnp.argmax(logits, -1) == targets
  return dict(nats=(losses * weights).sum(), right=(right & weights).sum(),
              targets=weights.sum())


class PairsTask:
  """Replies to prompts (`lm_jax.pairs`): val loss and bits per character
  of the replies, token accuracy (teacher-forced) and exact match of the
  greedy reply; a few held-out prompts and their replies."""
  does = "answers it"
  example_prompt = "I am tired of my work"

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
    lines = (f"pairs: {splits.source}: {len(arrays['train'][0]):,} train / "
             f"{len(src):,} val pairs ({n:,} evaluated), vocab "
             f"{tokenizer.vocab_size}",
             splits.skipped.line("reading pairs"),
             skipped["train"].line("train pairs"),
             skipped["val"].line("val pairs"))
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
    shown = []
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
    (`lm_jax.beam.beam_replies`) and its log-probability."""
    if beam:
      [(text, score)] = beam_lib.beam_replies(run.params, run.model,
                                              run.tokenizer, [prompt], beam)
      print(text)
      print(f"(beam {beam}: log-probability {score:.3f})", file=sys.stderr)
      return
    for text in replies.reply(run.params, run.model, run.tokenizer,
                              [prompt] * num_samples, key, options):
      print(text)

  def responder(self, run: rundir.Run, stop: str) -> interactive.Respond:
    return lambda line, options, key: self.sample(run, line, key, options,
                                                  1, stop)


TASKS: dict[str, Task] = {"text": TextTask(), "pairs": PairsTask()}


def task_for(config) -> Task:
  """The task of the model config.model.kind names."""
  return TASKS[model_class(config.model.kind).task]


def task_of(model) -> Task:
  """The task `model` serves."""
  return TASKS[model.task]
