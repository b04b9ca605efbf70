"""The training loop: `train_and_evaluate(config, workdir)`.

Text -> tokenizer -> token arrays on device -> chunks of jitted train steps
-> periodic evaluation, samples and checkpoints. Running it again on the same
workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lm_jax import checkpoints, config as config_lib, corpus, data, parallel
from lm_jax import preemption, progress, rundir, sampling, steps, summary
from lm_jax import runtime, tokenizers
from lm_jax.errors import UserError
from lm_jax.metrics import MetricsLog
from lm_jax.models import make_model


class NonFiniteLoss(UserError):
  """The loss, gradients or parameters became NaN or infinite: training
  stops, and the checkpoints saved before stay (none of them holds a NaN)."""


def load_tokens(config, workdir: pathlib.Path):
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
  if config.train.sample_tokens > 0:
    try:
      tokenizers.encode_prompt(tokenizer, config.train.sample_prompt)
    except UserError as e:
      raise UserError(f"config.train.sample_prompt="
                      f"{config.train.sample_prompt!r}: {e}") from None
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


def check_finite(state: steps.TrainState, metrics: dict, mngr,
                 skip_nonfinite: bool) -> None:
  """Raises NonFiniteLoss if the chunk just run diverged.

  That is: a step with a non-finite loss or gradients (unless such steps
  are skipped), or non-finite parameters, which can then only come from
  too many skipped steps in a row (steps.MAX_CONSECUTIVE_SKIPS).
  """
  step = int(state.step)
  finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
  if skip_nonfinite or finite.all():
    if bool(steps.all_finite(state.params)):
      return
    bad, what = step, "the parameters are"
  else:
    first = int(np.argmin(finite))
    bad = step - len(finite) + first + 1
    what = ("the loss is" if not np.isfinite(metrics["loss"][first])
            else "the gradients are")
  latest = mngr.latest_step()
  kept = ("no checkpoint was saved yet" if latest is None else
          f"the last good checkpoint (step {latest}) is kept")
  fix = ("lower config.train.learning_rate or raise "
         "config.train.warmup_steps")
  if not skip_nonfinite:
    fix += ", or set config.train.skip_nonfinite=True to skip such steps"
  raise NonFiniteLoss(
      f"training diverged at step {bad}: {what} not finite "
      f"({steps.skipped_updates(state)} steps skipped before); {kept}; {fix}")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike,
                       stop_at: int | None = None) -> dict:
  """Trains `config` in `workdir` to config.train.num_steps; returns last eval.

  `stop_at` ends this call early at that step (evaluating and saving there);
  calling again resumes, exactly as if the run had never stopped. On SIGINT
  or SIGTERM it saves a checkpoint after the chunk of steps in flight and
  raises preemption.Interrupted.
  """
  with preemption.StopOnSignal() as stop, contextlib.ExitStack() as hold:
    return _train(config, pathlib.Path(workdir), stop_at, stop, hold)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path,
           stop_at: int | None, stop: preemption.StopOnSignal,
           hold: contextlib.ExitStack) -> dict:
  """train_and_evaluate, polling `stop` after each chunk of steps; the run
  directory's lock goes on `hold`."""
  # Every check on the user's input comes before the first write.
  config_lib.validate(config)
  parallel.maybe_initialize_distributed(config)
  mesh = parallel.make_mesh(config.train.batch_size)
  t = config.train
  started = time.perf_counter()
  progress.phase("loading the corpus")
  text, tokenizer, train_ids, val_ids = load_tokens(config, workdir)
  model = make_model(config.model, tokenizer.vocab_size)
  # Several processes (config.distributed): process 0 writes for all.
  if jax.process_index() == 0:
    rundir.prepare(workdir)
    hold.enter_context(rundir.lock(workdir))
    rundir.write_run(workdir, config, tokenizer)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  state = parallel.place_state(steps.create_train_state(model, t, init_key),
                               mesh, t.fsdp)
  mngr = checkpoints.manager(workdir)
  start = mngr.latest_step()
  if start is not None:
    start, state = checkpoints.resume(mngr, state)
  unk_rate = float(np.mean(val_ids == tokenizers.UNK_ID))
  print(f"workdir: {workdir}")
  print(f"corpus: {text.source}: {len(train_ids):,} train / "
        f"{len(val_ids):,} val tokens, vocab {tokenizer.vocab_size}, "
        f"{unk_rate:.2%} of val tokens {tokenizers.UNK}")
  print(summary.model_summary(model, state.params, t))
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
        + (", parameters sharded (FSDP)" if t.fsdp else ""))
  warning = runtime.gpu_warning(jax.default_backend())
  if warning:
    print(warning, file=sys.stderr)
  if t.carry_state:
    print(f"carrying the recurrent state (truncated BPTT): {t.batch_size} lanes "
          f"of {data.lane_length(len(train_ids), t.batch_size):,} tokens, "
          f"{data.lane_windows(len(train_ids), t.batch_size, t.seq_len):,} "
          f"windows of {t.seq_len} each")
  if start is not None and start >= t.num_steps:
    print(f"already complete at step {start} (config.train.num_steps="
          f"{t.num_steps}); raise it to train further, e.g. "
          f"--config.train.num_steps={2 * t.num_steps}")
  elif start is not None:
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
  compiled = False
  while step < end:
    if not compiled:
      progress.phase("compiling the train step")
    boundary = min(end, (step // t.log_every + 1) * t.log_every,
                   (step // t.eval_every + 1) * t.eval_every)
    state, metrics = steps.train_steps(
        state, train_tokens, seed_key, batch_size=t.batch_size,
        seq_len=t.seq_len, num_steps=min(t.steps_per_call, boundary - step),
        grad_accum_steps=t.grad_accum_steps,
        batch_sharding=parallel.batch_sharding(mesh))
    metrics = jax.device_get(metrics)
    step = int(state.step)
    if not compiled:  # time from here: the first call was mostly compiling
      tick, tick_step, compiled = time.perf_counter(), step, True
    check_finite(state, metrics, mngr, t.skip_nonfinite)
    if step % t.log_every == 0 or step == end:
      now = time.perf_counter()
      rate = (step - tick_step) / (now - tick) if step > tick_step else None
      record = dict(step=step, loss=float(metrics["loss"][-1]),
                    lr=float(steps.lr_schedule(t)(step - 1)),
                    grad_norm=float(metrics["grad_norm"][-1]))
      if rate:
        record["tokens_per_s"] = rate * t.batch_size * t.seq_len
      if t.skip_nonfinite:
        record["skipped_steps"] = steps.skipped_updates(state)
      log.write(**record)
      print(progress.step_line(step, t.num_steps, record, now - started,
                               rate), flush=True)
      tick, tick_step = time.perf_counter(), step
    if step % t.eval_every == 0 or step == end:
      progress.phase("evaluating")
      result = evaluate_and_save(state, model, mngr, log, step, val_x, val_y,
                                 val_chars, unk_rate, tokenizer, sample_prompt,
                                 config)
      tick, tick_step = time.perf_counter(), step
    if stop.requested:
      if mngr.latest_step() != step:  # not saved by the evaluation just now
        checkpoints.save(mngr, step, state)
      raise preemption.Interrupted(stop.signum, step, workdir)
  seconds = time.perf_counter() - started if compiled else None
  print(progress.run_summary(workdir, step, t.num_steps,
                             t.batch_size * t.seq_len, seconds))
  return result


def bits_per_char(nats_per_token: float, num_tokens: int,
                  num_chars: int) -> float:
  """The total loss in bits, spread over the characters the tokens cover."""
  return nats_per_token * num_tokens / (num_chars * math.log(2))


def evaluate_and_save(state, model, mngr, log, step, val_x, val_y, val_chars,
                      unk_rate, tokenizer, sample_prompt, config) -> dict:
  """Val loss, perplexity, bits per character; a checkpoint and a sample.

  val_loss is nats per token; bits per character spreads the same total
  over the `val_chars` characters the targets cover (docs/WORD_LEVEL.md,
  "Metrics").
  """
  val_loss = steps.evaluate(state.params, model, val_x, val_y)
  bpc = bits_per_char(val_loss, val_y.size, val_chars)
  record = dict(step=step, val_loss=val_loss, val_bpc=bpc,
                val_ppl=math.exp(val_loss), val_unk_rate=unk_rate)
  # The record only once its checkpoint is committed: a failed save (a full
  # disk) leaves no val record of a checkpoint that does not exist.
  checkpoints.save(mngr, step, state, val_loss)
  log.write(**record)
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
