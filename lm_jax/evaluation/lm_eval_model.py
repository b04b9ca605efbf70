"""A run as an lm-evaluation-harness model, in-process (levanter's way).

Importing this module registers the model as `lm_jax` in lm-eval's
registry (lm-eval 0.4.13 has no plugin entry points, so
`lm-jax-eval` (lm_jax/cli/evaluate.py) imports it, then runs lm-eval's own
command line):

    lm-jax-eval --model lm_jax --model_args workdir=runs/char_tf \\
      --tasks plays_cloze --include_path experiments/eval_tasks

The three requests lm-eval makes, on the run's parameters:

  loglikelihood          the continuation's summed log-probability after
                         the context, and whether greedy decoding gives it:
                         one forward pass per batch of pairs
                         (lm_jax/generation/scoring.py: loglikelihoods)
  loglikelihood_rolling  a whole text's log-probability, windows past the
                         context as scoring.score makes them
  generate_until         the one decoder (sampling.generate_text), greedy
                         unless the task asks for a temperature

Text is split as lm-eval's `hf` model splits it: the context's ids, then
the ids of context + continuation past them. These models have no
begin-of-text token, so the first token of a text is never scored: an
empty context gives the continuation's first token as context instead
(its log-probability left out), and loglikelihood_rolling leaves out the
text's first token. A run whose task cannot score (a masked model, an
encoder-decoder) is refused in one line naming what it can do.
"""

from __future__ import annotations

from typing import Any

import jax
# The built-in models' (lazy) entries first: lm-eval's registry fills
# itself only while empty, so registering ours alone would hide them.
import lm_eval.models  # noqa: F401
import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from lm_jax import tasks
from lm_jax.errors import UserError
from lm_jax.generation import sampling, scoring
from lm_jax.runs import modelfile, rundir
from lm_jax.tasks.base import Can

DEFAULT_BATCH = 16  # pairs per forward pass
DEFAULT_GEN_TOKENS = 256


def _batch_size(value) -> int:
  """lm-eval's --batch_size: a number, or "auto" (the default here)."""
  return int(value) if str(value).isdigit() and int(value) > 0 \
      else DEFAULT_BATCH


def check_run(workdir: str) -> None:
  """Refuses a run directory whose task cannot score a text, from its
  config alone (before lm-eval starts; the model is loaded later)."""
  import pathlib

  import ml_collections
  path = pathlib.Path(workdir)
  if not (path / rundir.CONFIG_FILE).is_file():
    raise UserError(f"{workdir} is not a run directory (no "
                    f"{rundir.CONFIG_FILE}); pass workdir=DIR of a trained "
                    "run in --model_args")
  task = tasks.task_for(ml_collections.ConfigDict(rundir.read_config(path)))
  if Can.SCORE not in task.can:
    raise task.refusal(Can.SCORE, "lm-eval's lm_jax model")


@register_model("lm_jax")
class LMJaxModel(LM):
  """A trained run (`workdir`, its best checkpoint or `step`) or a model
  file lm-jax-export wrote (`model`), as lm-eval's LM."""

  def __init__(self, workdir: str | None = None, model: str | None = None,
               step: int | str | None = None,
               batch_size: int | str = DEFAULT_BATCH,
               max_gen_toks: int | str = DEFAULT_GEN_TOKENS, **_: Any):
    super().__init__()
    if (workdir is None) == (model is None):
      raise UserError("the lm_jax model takes workdir=RUN or model=FILE in "
                      "--model_args (one of them), e.g. "
                      "--model_args workdir=runs/char_tf")
    if workdir is not None:
      self.run = rundir.load_run(workdir, None if step is None else int(step))
    else:
      self.run = modelfile.load_model(str(model))
    self.task = tasks.task_of(self.run.model)
    if Can.SCORE not in self.task.can:
      raise self.task.refusal(Can.SCORE, "lm-eval's lm_jax model")
    self.batch_size = _batch_size(batch_size)
    self.max_gen_toks = int(max_gen_toks)

  def _encode(self, text: str) -> list[int]:
    return self.run.tokenizer.encode(text).tolist()

  def encode_pair(self, context: str, continuation: str
                  ) -> tuple[list[int], list[int]]:
    """Context ids, and the continuation's: lm-eval's `hf` split (the
    context's trailing spaces go to the continuation; the continuation's
    ids are those of the whole past the context's)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = (context[:-spaces],
                               context[-spaces:] + continuation)
    whole = self._encode(context + continuation)
    n = len(self._encode(context))
    ids, cont = whole[:n], whole[n:]
    if not ids:  # nothing to condition the first token on
      ids, cont = cont[:1], cont[1:]
    return ids, cont

  def loglikelihood(self, requests, disable_tqdm: bool = False
                    ) -> list[tuple[float, bool]]:
    pairs = [self.encode_pair(*r.args) for r in requests]
    out: list[tuple[float, bool]] = []
    for i in range(0, len(pairs), self.batch_size):
      chunk = pairs[i:i + self.batch_size]
      scorable = [(c, x) for c, x in chunk if c and x]
      scored = iter(scoring.loglikelihoods(self.run.params, self.run.model,
                                           scorable) if scorable else [])
      # A continuation of no tokens (or the one token of a text): nothing
      # to score, certain.
      out += [next(scored) if c and x else (0.0, True) for c, x in chunk]
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False
                            ) -> list[float]:
    texts = [self._encode(r.args[0]) for r in requests]
    out = []
    for i in range(0, len(texts), self.batch_size):
      chunk = [t for t in texts[i:i + self.batch_size] if t]
      scored = iter(self.task.score(self.run, chunk) if chunk else [])
      out += [float(np.nansum(next(scored).logprobs, dtype=np.float64))
              if t else 0.0 for t in texts[i:i + self.batch_size]]
    return out

  def generate_until(self, requests, disable_tqdm: bool = False
                     ) -> list[str]:
    out = []
    for r in requests:
      context, kwargs = r.args
      kwargs = dict(kwargs or {})
      until = kwargs.get("until") or []
      until = [until] if isinstance(until, str) else list(until)
      temperature = float(kwargs.get("temperature", 0.0)) \
          if kwargs.get("do_sample", False) else 0.0
      options = sampling.SamplingOptions(
          max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
          temperature=temperature)
      ids = np.asarray(self._encode(context) or self._encode("\n"))
      text = sampling.generate_text(
          self.run.params, self.run.model, self.run.tokenizer, ids,
          jax.random.key(int(kwargs.get("seed", 0))), options,
          stop=until[0] if until else "")[0]
      cut = min([text.find(s) for s in until if s and s in text],
                default=len(text))
      out.append(text[:cut])
    return out
