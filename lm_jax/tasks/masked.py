"""The "masked" task: name the tokens a text hides (masked language models,
lm_jax/models/mlm.py); fill blanks and generate by unmasking.

Training hides tokens of random windows on device (lm_jax/data/masking.py:
config.train.mask_scheme "bert" or "diffusion"). Evaluation hides the same
tokens of the same held-out windows every time and reports the loss over
the hidden tokens (nats, bits per character), how often the likeliest
token (top-1) or one of the five likeliest (top-5) is right, and for
"diffusion" the bound on nats per token (val_loss, comparable with a
causal model's); then fills a held-out line's blanks.
"""

from __future__ import annotations

import functools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.data import corpus, masking, tokenizers, windows
from lm_jax.errors import UserError
from lm_jax.generation import detokenize, interactive, sampling, unmask
from lm_jax.runs import rundir
from lm_jax.special_tokens import MASK, MASK_ID
from lm_jax.tasks.base import (Can, encode_splits, Loaded, refuse_beam, Task,
                               UnmaskOptions)
from lm_jax.tasks.text import TextTask
from lm_jax.training import losses, steps

EVAL_KEY = 1234  # the held-out masking: the same at every evaluation
UNMASKS = "a masked model unmasks (see --unmask_steps)"  # instead of --beam


def check_settings(train) -> None:
  """Refuses masking settings that cannot work (before anything is written)."""
  if train.get("mask_scheme") not in masking.SCHEMES:
    raise UserError(
        f"config.train.mask_scheme must be one of {masking.SCHEMES}, got "
        f"{train.get('mask_scheme')!r}; start from configs/char_mlm.py")
  if not 0 < train.mask_rate <= 1:
    raise UserError(f"config.train.mask_rate must be in (0, 1], got "
                    f"{train.mask_rate}")
  shares = (train.mask_share, train.random_share)
  if min(shares) < 0 or sum(shares) > 1:
    raise UserError(
        f"config.train.mask_share and random_share must be >= 0 and sum to "
        f"at most 1 (the rest stay as they are), got {shares}")


@functools.partial(jax.jit, static_argnames=("model",))
def masked_scores(params, model, inputs, targets, weights, lengths) -> dict:
  """Sums over a batch's hidden positions (weight > 0): nats, top-1 and
  top-5 right, characters; and the weighted nats (the diffusion bound)."""
  logits = model.apply({"params": params}, inputs)  # (B, T, V)
  nats = losses.token_nats(logits, targets)  # (B, T)
  hidden = weights > 0
  top5 = jax.lax.top_k(logits, 5)[1]  # (B, T, 5)
  right5 = (top5 == targets[..., None]).any(-1)
  return dict(nats=(nats * hidden).sum(), hidden=hidden.sum(),
              right=((top5[..., 0] == targets) & hidden).sum(),
              right5=(right5 & hidden).sum(),
              chars=(lengths[targets] * hidden).sum(),
              bound=(nats * weights).sum())


def blank_line(lines: list[str], tokenizer, seq_len: int
               ) -> tuple[np.ndarray, np.ndarray] | None:
  """A held-out line to fill at each evaluation, and the positions to
  blank in it (15%, at least 2, fixed): the first line of 8 (words) or 24
  (characters) tokens up to `seq_len`."""
  shortest = 8 if tokenizer.kind == "word" else 24
  for line in lines:
    ids = tokenizer.encode(line)
    if shortest <= len(ids) <= seq_len:
      rng = np.random.default_rng(0)
      k = max(2, round(0.15 * len(ids)))
      return ids, np.sort(rng.choice(len(ids), k, replace=False))
  return None


def candidates(tokenizer, out, pos: int) -> list[tuple[str, float]]:
  """The likeliest tokens at position `pos` of an unmasking's `out`, as
  (text, probability), the likeliest first."""
  ids, probs = np.asarray(out.top_ids[pos]), np.asarray(out.top_probs[pos])
  return [(detokenize.token_text(tokenizer, int(i)), float(p))
          for i, p in zip(ids, probs)]


def candidates_text(cands: list[tuple[str, float]]) -> str:
  """`'b' 0.912 | 'd' 0.031 | ...`"""
  return " | ".join(f"{text!r} {p:.3f}" for text, p in cands)


def show(tokenizer, ids, blank: str = "_") -> str:
  """Text of ids with each `<mask>` shown as `blank`."""
  return tokenizer.decode(ids).replace(MASK, blank)


class MaskedTask(Task):
  """Masked-token loss, accuracy and the diffusion bound; blanks filled."""
  can = frozenset({Can.CONTINUE, Can.FILL, Can.INTERACTIVE})
  # Windows with some tokens hidden; the labels are (targets, weights), the
  # masking scheme's weights (lm_jax/data/masking.py).
  objective = steps.Objective(masking.get_batch, weights=lambda y: y[1],
                              targets=lambda y: y[0])
  does = "fills its blanks (_), or continues it by unmasking"
  example_prompt = "ROMEO:"  # continued by unmasking (--fill: blanks)
  example_fill = "To be, or not to __, that is the question"
  sample_flags = ""

  def example(self, config, tokenizer) -> str:
    """The hint's prompt, chosen as for a language model (`TextTask`)."""
    return TextTask().example(config, tokenizer)

  def __init__(self, options: UnmaskOptions = UnmaskOptions()):
    self.options = options

  def metric(self, config) -> str:
    """bert: nats per hidden token (character) at its masking rate, not
    comparable with a causal model's nats per token; diffusion: a bound
    on the text's nats per token."""
    t = config.train
    if t.mask_scheme == "diffusion":
      return "nats per token, a bound (masked diffusion)"
    unit = "character" if config.data.tokenizer == "char" else "token"
    return f"nats per hidden {unit}, at masking rate {t.mask_rate:g}"

  def with_options(self, options: UnmaskOptions) -> MaskedTask:
    return MaskedTask(options)

  def load(self, config, workdir: pathlib.Path) -> Loaded:
    """Corpus -> tokenizer (with `<mask>`) -> ids; held-out windows masked
    once (`EVAL_KEY`)."""
    t = config.train
    check_settings(t)
    text = corpus.load_corpus(config.data.path, config.data.val_fraction,
                              tuple(config.data.val_plays),
                              config.data.get("text_field", "text"))
    tokenizer = tokenizers.build_tokenizer(config.data.tokenizer, text.train,
                                           mask=True, **config.data)
    rundir.check_resumable(workdir, config, tokenizer)
    train_ids, val_ids = encode_splits(tokenizer, text, t)
    scheme = masking.MaskScheme.from_config(t, tokenizer.vocab_size)
    val_x = windows.eval_batches(val_ids, t.batch_size, t.seq_len,
                                 t.eval_tokens)[0]  # (N, B, T)
    mask = jax.jit(functools.partial(masking.mask_tokens, scheme=scheme))
    batches = [jax.device_get(mask(jax.random.fold_in(
        jax.random.key(EVAL_KEY), i), x, np.ones(x.shape, bool)))
        for i, x in enumerate(val_x)]
    val = dict(batches=batches, lengths=tokenizer.token_lengths(),
               line=blank_line(text.val.splitlines(), tokenizer, t.seq_len),
               scheme=t.mask_scheme)
    line = (f"corpus: {text.source}: {len(train_ids):,} train / "
            f"{len(val_ids):,} val tokens, vocab {tokenizer.vocab_size}; "
            f"masking: {describe(t)}")
    return (Loaded(tokenizer, masking.MaskedData(train_ids, scheme), val,
                   (line,)))

  def evaluate(self, params, model, loaded: Loaded, step: int, config
               ) -> tuple[dict, list[str], dict[str, str]]:
    """Loss over the hidden tokens (nats, bits per character), top-1 and
    top-5 accuracy; "diffusion": the bound (val_loss, nats per token). A
    held-out line with blanks, filled most confident first."""
    val, tokenizer = loaded.val, loaded.tokenizer
    sums: dict[str, float] = {}
    for inputs, targets, weights in val["batches"]:
      for k, v in masked_scores(params, model, inputs, targets, weights,
                                val["lengths"]).items():
        sums[k] = sums.get(k, 0.0) + float(v)
    tokens = sum(b[1].size for b in val["batches"])
    masked_loss = sums["nats"] / sums["hidden"]
    record = dict(step=step, val_masked_loss=masked_loss,
                  val_masked_bpc=sums["nats"] / (sums["chars"] * math.log(2)),
                  val_acc=sums["right"] / sums["hidden"],
                  val_top5=sums["right5"] / sums["hidden"])
    unit = "character" if config.data.tokenizer == "char" else "token"
    line = (f"eval step {step} | masked loss {masked_loss:.4f} nats per "
            f"hidden {unit}"
            + (f", at masking rate {config.train.mask_rate:g}"
               if val["scheme"] != "diffusion" else "")
            + f" ({record['val_masked_bpc']:.4f} bits per hidden character)"
            " | acc "
            f"{record['val_acc']:.2%} top-5 {record['val_top5']:.2%}")
    if val["scheme"] == "diffusion":
      record["val_bound"] = sums["bound"] / tokens
      record["val_loss"] = record["val_bound"]
      chars = sum(val["lengths"][b[1]].sum() for b in val["batches"])
      record["val_bpc"] = sums["bound"] / (chars * math.log(2))
      line += (f" | bound {record['val_bound']:.4f} nats/token "
               f"({record['val_bpc']:.4f} bpc)")
    else:  # the loss over the chosen tokens (no bound on the text's)
      record["val_loss"] = masked_loss
      record["val_bpc"] = record["val_masked_bpc"]
    texts = {}
    if val["line"] is not None:
      ids, blanks = val["line"]
      hidden = ids.copy()
      hidden[blanks] = MASK_ID
      out = unmask.unmask(params, model, jnp.asarray(hidden),
                          jax.random.key(step), len(blanks))
      texts["fill"] = (f"{show(tokenizer, hidden)}\n"
                       f"{tokenizer.decode(np.asarray(out.tokens))}")
    return record, [line], texts

  def encode_blanks(self, tokenizer, text: str, context: int
                    ) -> tuple[np.ndarray, str | None]:
    """Ids of `text` with MASK_ID for each blank marker; a notice naming
    words read as `<unk>`. UserError: no blank, too long, unknown
    characters."""
    marker = self.options.blank
    pieces = text.split(marker)
    if len(pieces) < 2:
      raise UserError(f"--fill text has no blank: mark each hidden token "
                      f"with {marker!r} (--blank), e.g. "
                      f"--fill={self.example_fill!r}")
    parts = []
    for i, piece in enumerate(pieces):
      if i:
        parts.append(np.array([MASK_ID], np.int32))
      parts.append(tokenizer.encode(piece, strict=tokenizer.strict_prompts))
    ids = np.concatenate(parts).astype(np.int32)
    if len(ids) > context:
      raise UserError(
          f"--fill text is {len(ids)} tokens ({len(pieces) - 1} blanks), "
          f"more than the model's context ({context}); shorten it")
    missing = tokenizer.unknown("".join(pieces))
    notice = (f"not in the model's vocabulary, read as {tokenizers.UNK}: "
              f"{', '.join(repr(w) for w in missing)}") if missing else None
    return ids, notice

  def _blanked(self, run: rundir.Run, text: str) -> np.ndarray:
    """`encode_blanks` for the run's model, its notice printed."""
    ids, notice = self.encode_blanks(run.tokenizer, text,
                                     run.model.context_length)
    if notice:
      print(f"note: {notice}", file=sys.stderr)
    return ids

  def filled(self, run: rundir.Run, ids: np.ndarray, key: jax.Array
             ) -> unmask.Unmasked:
    """`ids` with every MASK_ID filled (greedy; most confident first, or
    all at once), each blank's likeliest tokens kept."""
    o = self.options
    num_steps = 1 if o.all_at_once else int((ids == MASK_ID).sum())
    return unmask.unmask(run.params, run.model, jnp.asarray(ids), key,
                         num_steps, top=min(o.top, run.tokenizer.vocab_size))

  def fill(self, run: rundir.Run, text: str, key: jax.Array) -> None:
    """Prints `text` with its blanks filled and each blank's likeliest
    tokens."""
    tokenizer, o = run.tokenizer, self.options
    ids = self._blanked(run, text)
    out = self.filled(run, ids, key)
    if o.show_steps:
      for s, canvas in enumerate(np.asarray(out.canvases)):
        print(f"step {s + 1}: {show(tokenizer, canvas, o.blank)}")
    print(tokenizer.decode(np.asarray(out.tokens)))
    at = np.asarray(out.revealed_at)
    for n, pos in enumerate(np.flatnonzero(ids == MASK_ID)):
      print(f"blank {n + 1} (token {pos}, step {at[pos] + 1}): "
            f"{candidates_text(candidates(tokenizer, out, int(pos)))}")

  def blank_distributions(self, run: rundir.Run, text: str, top: int = 10
                          ) -> tuple[np.ndarray, list[tuple[int, list]]]:
    """The model's distribution at each blank of `text`, every blank hidden
    at once (what it believes before filling any): the ids with MASK_ID at
    the blanks, and per blank (position, [(token text, probability), ...]),
    the `top` likeliest first. Text without a blank: its ids, none."""
    if self.options.blank not in text:
      return run.tokenizer.encode(text, strict=True), []
    ids = self._blanked(run, text)
    out = unmask.unmask(run.params, run.model, jnp.asarray(ids),
                        jax.random.key(0), 1,
                        top=min(top, run.tokenizer.vocab_size))
    return ids, [(int(pos), candidates(run.tokenizer, out, int(pos)))
                 for pos in np.flatnonzero(ids == MASK_ID)]

  def steps(self, n: int) -> int:
    """The steps that reveal `n` tokens: the asked number (0: n), at most
    n (a step reveals at least one)."""
    return min(self.options.steps or n, n)

  def continuation(self, run: rundir.Run, ids: np.ndarray, n: int,
                   key: jax.Array, options: sampling.SamplingOptions
                   ) -> tuple[unmask.Unmasked, int]:
    """`ids` (their last context - n) and `n` masks after them, revealed
    in `steps` steps (0: n); and how many of `ids` the canvas kept."""
    ids = ids[-(run.model.context_length - n):]
    canvas = np.concatenate([ids, np.full(n, MASK_ID, np.int32)])
    out = unmask.unmask(run.params, run.model, jnp.asarray(canvas), key,
                        self.steps(n), self.options.order, options,
                        top=min(self.options.top, run.tokenizer.vocab_size))
    return out, len(ids)

  def generate(self, run: rundir.Run, ids: np.ndarray, key: jax.Array,
               options: sampling.SamplingOptions) -> str:
    """The text of N = options.max_new_tokens tokens unmasked after `ids`
    (`continuation`)."""
    o, tokenizer = self.options, run.tokenizer
    context = run.model.context_length
    n = options.max_new_tokens
    if n >= context:
      print(f"note: {n} new tokens cut to {context // 2}: a masked model "
            f"generates within its context ({context} tokens)",
            file=sys.stderr)
      n = context // 2
    if o.steps > n:
      print(f"note: --unmask_steps={o.steps} cut to {n}: each step reveals "
            f"at least one of the {n} new tokens", file=sys.stderr)
    out, kept = self.continuation(run, ids, n, key, options)
    if o.show_steps:
      for s, c in enumerate(np.asarray(out.canvases)):
        print(f"---------- step {s + 1}/{self.steps(n)} ----------")
        print(show(tokenizer, c, o.blank))
      print("---------- text ----------")
    tokens = np.asarray(out.tokens)  # the kept prompt, then the new ones
    return detokenize.detokenize(tokenizer, tokens[kept:], tokens[:kept])

  def sample(self, run: rundir.Run, prompt: str, key: jax.Array,
             options: sampling.SamplingOptions, num_samples: int,
             stop: str, beam: int = 0) -> None:
    """Prints the prompt and N tokens generated after it by unmasking."""
    refuse_beam(beam, UNMASKS)
    tokenizer = run.tokenizer
    ids, notice = tokenizers.encode_prompt(tokenizer, prompt)
    if notice:
      print(f"note: {notice}", file=sys.stderr)
    for i in range(num_samples):
      if num_samples > 1:
        print(f"---------- sample {i + 1} ----------")
      text = self.generate(run, ids, jax.random.fold_in(key, i), options)
      if stop and stop in text:
        text = text[:text.index(stop)]
      print(tokenizer.decode(ids) + text)

  def responder(self, run: rundir.Run, stop: str, beam: int = 0
                ) -> interactive.Respond:
    """A line with blanks is filled; any other is continued by unmasking."""
    refuse_beam(beam, UNMASKS)

    def respond(line: str, options: sampling.SamplingOptions, key) -> None:
      if self.options.blank in line:
        self.fill(run, line, key)
      else:
        self.sample(run, line, key, options, 1, stop)

    return respond


def describe(train) -> str:
  """The masking settings, in words."""
  if train.mask_scheme == "diffusion":
    rates = ("stratified over the batch" if train.get("stratified_rates")
             else "independent")
    return (f"diffusion (rate ~ U(0, 1] per row, {rates}, all <mask>, loss "
            "weighted 1/rate)")
  keep = 1 - train.mask_share - train.random_share
  return (f"bert ({train.mask_rate:.0%} chosen: {train.mask_share:.0%} "
          f"<mask>, {train.random_share:.0%} random, {keep:.0%} kept)")
