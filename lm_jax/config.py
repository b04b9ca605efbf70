"""The settings every run shares, and checks that turn bad values into errors.

Config files in `configs/` start from `base_config()` and change what their
experiment needs; `validate()` runs before anything is trained or written.
"""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import re

import ml_collections

from lm_jax.errors import UserError

# Held-out plays of the built-in corpus: about 10% of its characters.
VAL_PLAYS = ("hamlet", "the-tempest", "twelfth-night", "julius-caesar")


def configs_dir() -> pathlib.Path:
  """The shipped configs: lm_jax/configs in a wheel, configs/ in a clone."""
  package = pathlib.Path(__file__).parent  # lm_jax/
  installed = package / "configs"
  return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
  return sorted(p.stem for p in configs_dir().glob("*.py")
                if not p.stem.startswith("_"))


def resolve_config(value: str) -> str:
  """`char_tf:smoke` -> `<configs_dir>/char_tf.py:smoke`; a path is kept.

  absl's config flag takes a file path; a bare name lets an installed
  package find its own configs from any directory.
  """
  name, colon, variant = value.partition(":")
  if not name or "/" in name or name.endswith(".py") or os.path.exists(name):
    return value
  path = configs_dir() / f"{name}.py"
  if not path.is_file():
    raise UserError(f"unknown config {name!r}: pass a config file or one of "
                    f"{', '.join(shipped_configs())}")
  return f"{path}{colon}{variant}"


def base_config() -> ml_collections.ConfigDict:
  """Defaults for a small character-level Transformer on the built-in plays."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.distributed = False  # True: jax.distributed.initialize() (several hosts)
  # Start from a checkpoint (fine-tuning): a Hugging Face folder (GPT-2 or
  # Llama) or what lm-jax-export wrote; its model settings, vocabulary and
  # weights replace the config's (lm_jax/runs/hf_checkpoint.py).
  c.init_from = ""

  c.data = ml_collections.ConfigDict()
  c.data.path = ""  # empty: the built-in Shakespeare corpus
  c.data.val_fraction = 0.1  # for a single text file: the last 10% is val
  c.data.text_field = "text"  # a JSONL corpus: the field holding the text
  c.data.val_plays = VAL_PLAYS  # for the built-in corpus
  c.data.tokenizer = "char"  # or "word", "bpe" (byte-level subwords)
  c.data.vocab_size = 8192  # word and bpe tokenizers: ids in all, specials too
  c.data.min_count = 1  # word tokenizer: rarer words become `<unk>`
  # A saved vocabulary to use instead of building one from the text: a
  # tokenizer.json, a folder holding one, or a file lm-jax-export wrote
  # (config.init_from sets it).
  c.data.vocab_from = ""

  c.model = ml_collections.ConfigDict()
  c.model.kind = "transformer"
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.max_len = 128  # the longest context (learned positions: the table)
  c.model.dropout = 0.0
  c.model.tie_embeddings = True
  c.model.scan_layers = False
  # "bfloat16": bf16 matrix products (fp32 parameters, optimiser, softmax
  # and loss). A GPU's tensor cores run it faster; XLA's CPU products run
  # bf16 no faster than fp32 (docs/BENCHMARKS.md), so fp32 is the default.
  c.model.dtype = "float32"
  c.model.gelu_approximate = True  # tanh GELU, as in GPT-2
  # "blocked": tiles of attention_tile positions, the (T, T) weights never
  # stored (lm_jax/models/attention.py); as fast as "dense" at T 64-128 and
  # faster beyond (experiments/results/cpu_gpt6_levers.md). "dense": every
  # (T, T) weight at once, the textbook form (lm-jax-inspect draws it).
  c.model.attention = "blocked"
  c.model.attention_tile = 64  # positions per tile (blocked attention)
  # True: the backward pass recomputes each block's norms, activations and
  # attention, keeping only its matrix products' outputs: less memory, a
  # little more time (experiments/results/cpu_gpt6_levers.md).
  c.model.remat = False
  # Recipe options, all off here (lm_jax/models/recipe.py says what each is).
  c.model.position = "learned"  # or "rope": rotary embeddings on q and k
  c.model.norm = "layernorm"  # or "rmsnorm"
  c.model.qk_norm = False  # RMSNorm on each head's q and k
  c.model.mlp = "gelu"  # or "relu2" (ReLU squared), "swiglu"
  c.model.zero_init_proj = False  # output projections (and head) start at 0
  c.model.logit_softcap = 0.0  # cap * tanh(logits / cap); 0: off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.seq_len = 128
  c.train.num_steps = 1500
  # A budget of training seconds (evaluations, compiling and start-up not
  # counted): the run stops at it, evaluated and saved, if num_steps has
  # not stopped it first; 0: none. The schedule spans num_steps unless
  # schedule_clock is "budget".
  c.train.max_seconds = 0.0
  c.train.learning_rate = 1e-3
  # "cosine", "wsd" (warmup, stable, linear decay over the last
  # decay_fraction of the steps) or "constant" (lm_jax/training/optimizers.py).
  c.train.schedule = "cosine"
  c.train.decay_fraction = 0.2  # wsd: the share of steps spent decaying
  # What the decay follows: "steps" (to num_steps) or "budget" (the share
  # of max_seconds trained, or of num_steps if further: a budgeted run
  # decays to its end however many steps the machine fits).
  c.train.schedule_clock = "steps"
  c.train.min_lr_ratio = 0.1  # the decay ends at learning_rate * this
  c.train.warmup_steps = 100
  # "adamw", "muon" (hidden matrices; AdamW for the rest) or
  # "schedule_free" (AdamW; evaluated at its averaged parameters).
  c.train.optimizer = "adamw"
  c.train.muon_learning_rate = 0.02  # muon: the hidden matrices' peak rate
  c.train.muon_momentum = 0.95  # muon: Nesterov momentum of the matrices
  c.train.b1 = 0.9
  c.train.b2 = 0.99  # bigger than 0.95 because tokens per step are few
  c.train.weight_decay = 0.1  # on matrices only
  c.train.grad_clip = 1.0  # global norm
  c.train.z_loss = 0.0  # adds z_loss * mean(logsumexp(logits)^2); 0: off
  # A step with a non-finite loss or gradients stops the run (False), or
  # its update is dropped and counted in the logs (True).
  c.train.skip_nonfinite = False
  c.train.steps_per_call = 16  # train steps per jitted call (on-device loop)
  c.train.grad_accum_steps = 1  # micro-batches per step (batch_size / this)
  c.train.fsdp = False  # shard params and optimiser state across devices
  # Recurrent models (LSTM, GRU) only: truncated backpropagation through
  # time, as char-rnn. The batch rows are contiguous lanes of the text read
  # window after window, and the state at the end of a window starts the
  # next (no gradient across windows). False: random windows, each from
  # the zero state.
  c.train.carry_state = False
  # On CPU, JAX devices to split the cores into (0: one per core, as many as
  # divide the batch); set by `python -m lm_jax.train` before JAX starts.
  c.train.cpu_devices = 0
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.eval_tokens = 32768  # validation targets per evaluation
  c.train.sample_tokens = 200  # sample printed at each eval; 0: none
  c.train.sample_prompt = "\n"
  return c


def pairs_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """base_config for an encoder-decoder (`model`) trained on pairs.

  train.seq_len is the decoder's positions (BOS and the reply): the run
  summary counts a step's tokens as batch_size x seq_len.
  """
  c = base_config()
  c.model = model
  # Pairs made from the lines of config.data.path (empty: the built-in
  # plays) by transformations, by weight (lm_jax/data/pairs.py: TRANSFORMS)...
  c.data.pairs = "copy:1"
  c.data.pairs_file = ""  # ...or a TSV file of prompt<TAB>reply lines
  c.train.batch_size = 64
  c.train.seq_len = model.max_target_len + 1
  c.train.eval_pairs = 512  # held-out pairs scored, and greedily answered
  c.train.sample_pairs = 3  # held-out prompts answered at each eval
  c.train.sample_tokens = 0
  c.train.num_steps = 3000
  c.train.warmup_steps = 100
  c.train.log_every = 100
  c.train.eval_every = 500
  return c


def masked_config() -> ml_collections.ConfigDict:
  """base_config for a masked LM (lm_jax/models/mlm.py, the "masked" task).

  The masking settings (lm_jax/data/masking.py) are in config.train.
  """
  c = base_config()
  c.model.kind = "mlm"
  c.model.attention = "dense"  # blocked attention is causal only
  c.train.mask_scheme = "bert"  # or "diffusion": rate ~ U(0, 1] per row
  c.train.mask_rate = 0.15  # bert: the share of positions chosen
  c.train.mask_share = 0.8  # bert: chosen ones replaced by <mask>
  c.train.random_share = 0.1  # bert: by a random token (the rest stay)
  # diffusion: the batch's rates one per 1/B of (0, 1] (MDLM's
  # low-discrepancy sampler), not B independent draws; the same bound in
  # expectation, less variance.
  c.train.stratified_rates = True
  c.train.sample_tokens = 0  # a masked LM fills a held-out line instead
  return c


def smoke_pairs(c: ml_collections.ConfigDict) -> None:
  """`smoke_train` for a pairs config: the decoder's positions as seq_len,
  a few held-out pairs, a higher rate for 20 steps."""
  smoke_train(c)
  c.train.update(seq_len=c.model.max_target_len + 1, eval_pairs=32,
                 learning_rate=3e-3)


def smoke_train(c: ml_collections.ConfigDict, eval_tokens: int = 2048,
                sample_tokens: int = 32) -> None:
  """The seconds-long training every config's `:smoke` variant shares."""
  c.train.update(dict(
      batch_size=8, seq_len=32, num_steps=20, warmup_steps=2, steps_per_call=4,
      log_every=4, eval_every=10, eval_tokens=eval_tokens,
      sample_tokens=sample_tokens))


# The PRNG keeps 32 bits of a seed (jax.random.key without 64-bit mode):
# 2**32 gives the numbers of 0, so a larger seed would silently repeat a
# smaller one's run; past 64 bits JAX cannot take it at all.
SEED_RANGE = (0, 2**32)


def check_seed(flag: str, value) -> None:
  """Refuses a seed the PRNG cannot tell apart from another, or hold."""
  low, high = SEED_RANGE
  if isinstance(value, bool) or not isinstance(value, int) or not (
      low <= value < high):
    raise UserError(f"{flag}={value!r} is not a seed the random numbers can "
                    f"use: give an integer from {low} to {high - 1} (they "
                    "keep 32 bits; a larger seed would repeat a smaller one)")


def _positive(name: str, value, kind=(int,)) -> None:
  if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
    what = "integer" if kind == (int,) else "number"
    raise UserError(f"{name} must be a positive {what}, got {value!r}; "
                    f"set --{name}=...")


def check_finite(config: ml_collections.ConfigDict, prefix: str = "config"
                 ) -> None:
  """Refuses NaN and infinity in any number setting, naming its key.

  NaN passes every `<` and `>` test, so the checks below would let it
  through to a run that diverges at its first step.
  """
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      check_finite(value, name)
    elif isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"{name} is {value}; set --{name} to a finite number")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first setting that cannot work."""
  from lm_jax import models  # here: they need not import config
  from lm_jax.data.tokenizers import TOKENIZERS
  from lm_jax.training import optimizers
  check_finite(config)
  check_seed("--config.seed", config.seed)
  t = config.train
  if config.data.tokenizer not in TOKENIZERS:
    raise UserError(f"unknown tokenizer {config.data.tokenizer!r}: set "
                    f"config.data.tokenizer to one of {sorted(TOKENIZERS)}")
  if config.data.tokenizer == "word":
    _positive("config.data.min_count", config.data.min_count)
    if config.data.vocab_size < 2:
      raise UserError(f"config.data.vocab_size must be >= 2 (`<unk>` and one "
                      f"word), got {config.data.vocab_size}")
  if config.data.tokenizer == "bpe":
    from lm_jax.data import bpe
    bpe.check_vocab_size(config.data.vocab_size)
  for name in ("batch_size", "seq_len", "num_steps", "steps_per_call",
               "log_every", "eval_every", "eval_tokens", "grad_accum_steps"):
    _positive(f"config.train.{name}", t[name])
  if t.batch_size % t.grad_accum_steps:
    raise UserError(
        f"config.train.batch_size ({t.batch_size}) must be divisible by "
        f"config.train.grad_accum_steps ({t.grad_accum_steps}); change either")
  _positive("config.train.learning_rate", t.learning_rate, (int, float))
  max_seconds = t.get("max_seconds", 0.0)
  if isinstance(max_seconds, bool) or not isinstance(
      max_seconds, (int, float)) or not 0 <= max_seconds:
    raise UserError(f"config.train.max_seconds must be >= 0 (0: no budget), "
                    f"got {max_seconds!r}")
  if not 0 <= t.warmup_steps:
    raise UserError("config.train.warmup_steps must be >= 0")
  for name, choices in (("schedule", optimizers.SCHEDULES),
                        ("optimizer", optimizers.OPTIMIZERS)):
    if t[name] not in choices:
      raise UserError(f"unknown config.train.{name} {t[name]!r}: set it to "
                      f"one of {', '.join(choices)}")
  clock = t.get("schedule_clock", "steps")
  if clock not in optimizers.CLOCKS:
    raise UserError(f"unknown config.train.schedule_clock {clock!r}: set it "
                    f"to one of {', '.join(optimizers.CLOCKS)}")
  if clock == "budget" and not max_seconds:
    raise UserError("config.train.schedule_clock=budget decays over the "
                    "budget: set config.train.max_seconds (training seconds)")
  if clock == "budget" and optimizers.evaluates_elsewhere(t):
    raise UserError("schedule-free AdamW averages by its learning rates, "
                    "which a budget clock cannot scale afterwards: set "
                    "config.train.schedule_clock=steps or another optimizer")
  if not 0 < t.decay_fraction <= 1:
    raise UserError(f"config.train.decay_fraction must be in (0, 1], got "
                    f"{t.decay_fraction!r}")
  _positive("config.train.muon_learning_rate", t.muon_learning_rate,
            (int, float))
  if not 0 < t.grad_clip:
    raise UserError("config.train.grad_clip must be > 0")
  if not 0 <= t.z_loss:
    raise UserError(f"config.train.z_loss must be >= 0 (0: off), got "
                    f"{t.z_loss}")
  if not isinstance(t.carry_state, bool):
    raise UserError(f"config.train.carry_state must be True or False, got "
                    f"{t.carry_state!r}")
  if isinstance(t.cpu_devices, bool) or t.cpu_devices < 0:
    raise UserError(f"config.train.cpu_devices must be 0 (one per core) or a "
                    f"positive integer, got {t.cpu_devices!r}")
  models.check_config(config.model, t)


# `c.train.seq_len = 128  # why`: the key and its trailing comment.
_ASSIGNMENT = re.compile(r"^\s*c\.([\w.]+)\s*=[^#]*?(?:#\s*(.*))?$")


def key_comments(source: str) -> dict[str, str]:
  """{"train.seq_len": comment} for each `c.KEY = ...` line of a config's
  source: its trailing comment, or else the comment block just above it."""
  comments, block = {}, []
  for line in source.splitlines():
    if line.strip().startswith("#"):
      block.append(line.strip().lstrip("#").strip())
      continue
    match = _ASSIGNMENT.match(line)
    text = match and (match.group(2) or " ".join(block))
    if match and text:
      comments[match.group(1)] = text
    block = []
  return comments


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """{"model.position": value} of a nested config."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def describe(config: ml_collections.ConfigDict, config_file: str = "") -> str:
  """The resolved config, one `key = value` line each, with the comments of
  base_config and the config file (ml_collections keeps none itself)."""
  # pairs_config's own keys; base_config's comments win for shared ones.
  comments = key_comments(inspect.getsource(pairs_config)
                          + inspect.getsource(masked_config)
                          + inspect.getsource(base_config))
  # A default's comment ('or "rope": ...') would contradict another value:
  # it is shown after the default it describes.
  defaults = _flat(base_config())
  values = _flat(config)
  for key, note in comments.items():
    if key in defaults and key in values and values[key] != defaults[key]:
      comments[key] = f"default {defaults[key]!r}; {note}"
  path = pathlib.Path(config_file.partition(":")[0])
  if path.is_file():
    comments.update(key_comments(path.read_text(encoding="utf-8")))
  lines = [f"# --config={config_file}"] if config_file else []

  def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, f"{prefix}{key}.")
        continue
      line = f"{prefix}{key} = {value!r}"
      note = comments.get(prefix + key)
      lines.append(f"{line:<40}  # {note}" if note else line)

  walk(config, "")
  return "\n".join(lines)
