"""The training loop: `train_and_evaluate(config, workdir)`.

Text -> tokenizer -> token arrays on device -> chunks of jitted train steps
-> periodic evaluation, samples and checkpoints. Running it again on the same
workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lm_jax import checkpoints, config as config_lib, corpus, data, parallel
from lm_jax import sampling, steps, summary, tokenizers
from lm_jax.errors import UserError
from lm_jax.metrics import MetricsLog
from lm_jax.models import make_model

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# Settings a checkpoint cannot be resumed or sampled with if they change.
FIXED_SETTINGS = ("model", "data.tokenizer", "train.seq_len")


class NonFiniteLoss(UserError):
  """The loss became NaN or infinite: training stops, checkpoints stay."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict)
               else {f"{prefix}{k}": v})
  return out


def config_differences(stored: dict, requested: dict,
                       keys=FIXED_SETTINGS) -> list[str]:
  """'name: stored X, requested Y' for each fixed setting that differs."""
  stored, requested = _flatten(stored), _flatten(requested)
  names = sorted(n for n in stored.keys() | requested.keys()
                 if any(n == k or n.startswith(k + ".") for k in keys))
  return [f"{n}: stored {stored.get(n)!r}, requested {requested.get(n)!r}"
          for n in names if stored.get(n) != requested.get(n)]


def prepare_workdir(workdir: pathlib.Path, config) -> None:
  """Creates the run directory, or checks a resumed one matches `config`."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir}: {e.strerror}; pass "
                    "a writable --workdir") from None
  stored_file = workdir / CONFIG_FILE
  if stored_file.exists():
    stored = json.loads(stored_file.read_text())
    diffs = config_differences(stored, config_to_dict(config))
    if diffs:
      raise UserError(
          f"{workdir} holds a run with other settings ({'; '.join(diffs)}); "
          "use a new --workdir or the stored settings")


def load_tokens(config, workdir: pathlib.Path):
  """Corpus -> tokenizer (built, or loaded on resume) -> (train, val) ids."""
  text = corpus.load_corpus(config.data.path, config.data.val_fraction,
                            tuple(config.data.val_plays))
  tok_file = workdir / TOKENIZER_FILE
  if tok_file.exists():
    tokenizer = tokenizers.load_tokenizer(tok_file)
  else:
    tokenizer = tokenizers.build_tokenizer(config.data.tokenizer, text.train,
                                           **config.data)
  train_ids = tokenizer.encode(text.train)
  val_ids = tokenizer.encode(text.val)
  need = data.min_tokens(config.train.batch_size, config.train.seq_len)
  for name, ids in (("training", train_ids), ("validation", val_ids)):
    if len(ids) < need:
      raise UserError(
          f"the {name} text has {len(ids)} tokens, fewer than one batch "
          f"needs ({config.train.batch_size} x {config.train.seq_len} + 1 = "
          f"{need}); use a longer text or lower config.train.batch_size / "
          "config.train.seq_len")
  return text, tokenizer, train_ids, val_ids


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike,
                       stop_at: int | None = None) -> dict:
  """Trains `config` in `workdir` to config.train.num_steps; returns last eval.

  `stop_at` ends this call early at that step (evaluating and saving there);
  calling again resumes, exactly as if the run had never stopped.
  """
  config_lib.validate(config)
  parallel.maybe_initialize_distributed(config)
  mesh = parallel.make_mesh(config.train.batch_size)
  workdir = pathlib.Path(workdir)
  t = config.train
  text, tokenizer, train_ids, val_ids = load_tokens(config, workdir)
  model = make_model(config.model, tokenizer.vocab_size)
  prepare_workdir(workdir, config)
  if not (workdir / TOKENIZER_FILE).exists():
    tokenizers.save_tokenizer(tokenizer, workdir / TOKENIZER_FILE)
  if not (workdir / CONFIG_FILE).exists():
    (workdir / CONFIG_FILE).write_text(config.to_json(indent=1) + "\n")
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  state = parallel.place_state(steps.create_train_state(model, t, init_key),
                               mesh, t.fsdp)
  mngr = checkpoints.manager(workdir)
  start = mngr.latest_step()
  if start is not None:
    state = checkpoints.restore(mngr, start, state)
  unk_rate = float(np.mean(val_ids == tokenizers.UNK_ID))
  print(f"workdir: {workdir}")
  print(f"corpus: {text.source}: {len(train_ids):,} train / "
        f"{len(val_ids):,} val tokens, vocab {tokenizer.vocab_size}, "
        f"{unk_rate:.2%} of val tokens {tokenizers.UNK}")
  print(summary.model_summary(config, state.params, tokenizer.vocab_size))
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
        + (", parameters sharded (FSDP)" if t.fsdp else ""))
  if start is not None:
    print(f"resuming from step {start}")

  train_tokens = jax.device_put(train_ids, parallel.replicated(mesh))
  val_x, val_y = data.eval_batches(val_ids, t.batch_size, t.seq_len,
                                   t.eval_tokens)
  # Bits per character: nats over the characters the targets stand for.
  val_chars = tokenizer.covered_chars(val_x, val_y)
  log = MetricsLog(workdir, resume_step=start)
  sample_prompt = tokenizer.encode(t.sample_prompt)[None, :]

  step = int(state.step)
  result = {}
  tick, tick_step = time.perf_counter(), step
  end = min(t.num_steps, stop_at or t.num_steps)
  while step < end:
    boundary = min(end, (step // t.log_every + 1) * t.log_every,
                   (step // t.eval_every + 1) * t.eval_every)
    state, metrics = steps.train_steps(
        state, train_tokens, seed_key, batch_size=t.batch_size,
        seq_len=t.seq_len, num_steps=min(t.steps_per_call, boundary - step),
        grad_accum_steps=t.grad_accum_steps,
        batch_sharding=parallel.batch_sharding(mesh))
    metrics = jax.device_get(metrics)
    step = int(state.step)
    if not np.all(np.isfinite(metrics["loss"])):
      bad = step - len(metrics["loss"]) + int(np.argmin(
          np.isfinite(metrics["loss"]))) + 1
      raise NonFiniteLoss(
          f"loss is not finite at step {bad}; the last good checkpoint "
          f"(step {mngr.latest_step()}) is kept; lower "
          "config.train.learning_rate or raise config.train.warmup_steps")
    if step % t.log_every == 0 or step == end:
      now = time.perf_counter()
      rate = (step - tick_step) / (now - tick)
      record = dict(step=step, loss=float(metrics["loss"][-1]),
                    lr=float(steps.lr_schedule(t)(step - 1)),
                    grad_norm=float(metrics["grad_norm"][-1]),
                    tokens_per_s=rate * t.batch_size * t.seq_len)
      log.write(**record)
      print(f"step {step}/{t.num_steps} | loss {record['loss']:.4f} | "
            f"lr {record['lr']:.2e} | grad norm {record['grad_norm']:.3f} | "
            f"{record['tokens_per_s']:,.0f} tok/s | "
            f"ETA {_duration((t.num_steps - step) / rate)}", flush=True)
      tick, tick_step = time.perf_counter(), step
    if step % t.eval_every == 0 or step == end:
      result = evaluate_and_save(state, model, mngr, log, step, val_x, val_y,
                                 val_chars, unk_rate, tokenizer, sample_prompt,
                                 config)
      tick, tick_step = time.perf_counter(), step
  return result


def bits_per_char(nats_per_token: float, num_tokens: int,
                  num_chars: int) -> float:
  """The total loss in bits, spread over the characters the tokens cover."""
  return nats_per_token * num_tokens / (num_chars * math.log(2))


def evaluate_and_save(state, model, mngr, log, step, val_x, val_y, val_chars,
                      unk_rate, tokenizer, sample_prompt, config) -> dict:
  """Val loss, perplexity, bits per character; a checkpoint and a sample.

  val_loss is nats per token; bits per character spreads the same total
  over the `val_chars` characters the targets cover (README: "Metrics").
  """
  val_loss = steps.evaluate(state.params, model, val_x, val_y)
  bpc = bits_per_char(val_loss, val_y.size, val_chars)
  record = dict(step=step, val_loss=val_loss, val_bpc=bpc,
                val_ppl=math.exp(val_loss), val_unk_rate=unk_rate)
  log.write(**record)
  checkpoints.save(mngr, step, state, val_loss)
  print(f"eval step {step} | val loss {val_loss:.4f} nats/token | ppl "
        f"{record['val_ppl']:.2f} | {bpc:.4f} bpc | best step "
        f"{mngr.best_step()}", flush=True)
  if config.train.sample_tokens > 0:
    opts = sampling.SamplingOptions(
        max_new_tokens=config.train.sample_tokens, temperature=0.8)
    ids = sampling.generate(state.params, model, jnp.asarray(sample_prompt),
                            jax.random.key(step), opts)
    print("-" * 20 + " sample " + "-" * 20)
    sample = tokenizer.decode(np.concatenate([sample_prompt[0], ids[0]]))
    print(sample)
    log.text(step, "sample", sample)
    print("-" * 48, flush=True)
  return record


def load_run(workdir: str | os.PathLike, step: int | None = None):
  """(config, tokenizer, model, params, step) of a trained run directory.

  Loads the best checkpoint, or the one saved at `step`; the model is built
  from the config stored with the run, never from the caller's flags.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / CONFIG_FILE).exists():
    raise UserError(f"{workdir} is not a run directory (no {CONFIG_FILE}); "
                    "pass the --workdir a training run wrote")
  config = ml_collections.ConfigDict(
      json.loads((workdir / CONFIG_FILE).read_text()))
  tokenizer = tokenizers.load_tokenizer(workdir / TOKENIZER_FILE)
  model = make_model(config.model, tokenizer.vocab_size)
  mngr = checkpoints.manager(workdir, read_only=True)
  step = checkpoints.pick_step(mngr, step)
  abstract = jax.eval_shape(
      lambda: steps.create_train_state(model, config.train, jax.random.key(0)))
  state = checkpoints.restore(mngr, step, abstract)
  return config, tokenizer, model, state.params, step
