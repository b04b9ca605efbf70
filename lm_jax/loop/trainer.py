"""The training loop: `train_and_evaluate(config, workdir)`.

Text -> tokenizer -> token arrays on device -> chunks of jitted train steps
-> periodic evaluation, samples and checkpoints. Running it again on the same
workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np

from lm_jax import config as config_lib, tasks
from lm_jax.data import windows
from lm_jax.errors import UserError
from lm_jax.loop import preemption
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, rundir
from lm_jax.runs.metrics import MetricsLog
from lm_jax.training import parallel, steps
from lm_jax.views import progress, summary


class NonFiniteLoss(UserError):
  """The loss, gradients or parameters became NaN or infinite: training
  stops, and the checkpoints saved before stay (none of them holds a NaN)."""


class Clock:
  """Wall seconds of a run, as metrics.jsonl and checkpoints hold them.

  `elapsed()`: seconds since the command started, plus what the run had
  spent before the checkpoint it resumed from; `eval_s` of them were spent
  in evaluations (the loss, the sample, the checkpoint), so elapsed minus
  eval_s is the time spent training.
  """

  def __init__(self, started: float):
    self.started, self.offset, self.eval_s = started, 0.0, 0.0
    self.eval_started: float | None = None  # while evaluating

  def resume(self, saved: dict) -> None:
    """Continues from a checkpoint's `saved()` ({} from older code: 0)."""
    self.offset = float(saved.get("elapsed_s", 0.0))
    self.eval_s = float(saved.get("eval_s", 0.0))

  def elapsed(self) -> float:
    return self.offset + time.perf_counter() - self.started

  def saved(self) -> dict:
    """What a checkpoint saved now stores, the evaluation in flight counted."""
    now = self.elapsed()
    evaluating = 0.0 if self.eval_started is None else now - self.eval_started
    return {"elapsed_s": now, "eval_s": self.eval_s + evaluating}

  @contextlib.contextmanager
  def evaluating(self):
    self.eval_started = self.elapsed()
    try:
      yield
    finally:
      self.eval_s += self.elapsed() - self.eval_started
      self.eval_started = None


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
                       stop_at: int | None = None,
                       started: float | None = None) -> dict:
  """Trains `config` in `workdir` to config.train.num_steps; returns last eval.

  `started`: the `time.perf_counter()` the command started at, where its
  wall clock (metrics.jsonl's elapsed_s) starts; None: at this call.

  `stop_at` ends this call early at that step (evaluating and saving there);
  calling again resumes, exactly as if the run had never stopped. On SIGINT
  or SIGTERM it saves a checkpoint after the chunk of steps in flight and
  raises preemption.Interrupted.
  """
  with preemption.StopOnSignal() as stop, contextlib.ExitStack() as hold:
    return _train(config, pathlib.Path(workdir), stop_at, stop, hold,
                  time.perf_counter() if started is None else started)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path,
           stop_at: int | None, stop: preemption.StopOnSignal,
           hold: contextlib.ExitStack, command_started: float) -> dict:
  """train_and_evaluate, polling `stop` after each chunk of steps; the run
  directory's lock goes on `hold`."""
  # Every check on the user's input comes before the first write.
  config_lib.validate(config)
  parallel.maybe_initialize_distributed(config)
  mesh = parallel.make_mesh(config.train.batch_size)
  t = config.train
  started = time.perf_counter()
  progress.phase("loading the corpus")
  task = tasks.task_for(config)
  loaded = task.load(config, workdir)
  tokenizer, train_ids = loaded.tokenizer, loaded.train
  model = make_model(config.model, tokenizer.vocab_size)
  summary.check_fits(model, t)
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
  clock = Clock(command_started)
  if start is not None:
    start, state = checkpoints.resume(mngr, state)
    clock.resume(checkpoints.saved_metadata(mngr, start))
  print(f"workdir: {workdir}")
  print("\n".join(loaded.lines))
  print(summary.model_summary(model, state.params, t))
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
        + (", parameters sharded (FSDP)" if t.fsdp else ""))
  warning = progress.gpu_warning(jax.default_backend())
  if warning:
    print(warning, file=sys.stderr)
  if t.carry_state:
    print(f"carrying the recurrent state (truncated BPTT): {t.batch_size} lanes "
          f"of {windows.lane_length(len(train_ids), t.batch_size):,} tokens, "
          f"{windows.lane_windows(len(train_ids), t.batch_size, t.seq_len):,} "
          f"windows of {t.seq_len} each")
  if start is not None and start >= t.num_steps:
    print(f"already complete at step {start} (config.train.num_steps="
          f"{t.num_steps}); raise it to train further, e.g. "
          f"--config.train.num_steps={2 * t.num_steps}")
  elif start is not None:
    print(f"resuming from step {start}")
    change = rundir.schedule_change(workdir, config, start)
    if change:  # another num_steps or rate: the schedule is redrawn
      print(change)

  train_tokens = jax.device_put(train_ids, parallel.replicated(mesh))
  log = MetricsLog(workdir, resume_step=start)

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
    count = min(t.steps_per_call, boundary - step)
    # A whole call is the plain program; every shorter one shares another.
    state, metrics = steps.train_steps(
        state, train_tokens, seed_key,
        None if count == t.steps_per_call else count, batch_size=t.batch_size,
        seq_len=t.seq_len, num_steps=t.steps_per_call,
        grad_accum_steps=t.grad_accum_steps,
        batch_sharding=parallel.batch_sharding(mesh))
    metrics = {k: v[:count] for k, v in jax.device_get(metrics).items()}
    step = int(state.step)
    if not compiled:  # time from here: the first call was mostly compiling
      tick, tick_step, compiled = time.perf_counter(), step, True
    check_finite(state, metrics, mngr, t.skip_nonfinite)
    if step % t.log_every == 0 or step == end:
      now = time.perf_counter()
      rate = (step - tick_step) / (now - tick) if step > tick_step else None
      record = dict(step=step, loss=float(metrics["loss"][-1]),
                    lr=float(steps.lr_schedule(t)(step - 1)),
                    grad_norm=float(metrics["grad_norm"][-1]),
                    elapsed_s=clock.elapsed())
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
      with clock.evaluating():
        result = evaluate_and_save(state, model, mngr, log, step, task,
                                   loaded, config, clock)
      tick, tick_step = time.perf_counter(), step
    if stop.requested:
      if mngr.latest_step() != step:  # not saved by the evaluation just now
        checkpoints.save(mngr, step, state, metadata=clock.saved())
      raise preemption.Interrupted(stop.signum, step, workdir)
  seconds = time.perf_counter() - started if compiled else None
  print(progress.run_summary(workdir, step, t.num_steps,
                             t.batch_size * t.seq_len, seconds))
  return result


def evaluate_and_save(state, model, mngr, log, step: int, task: tasks.Task,
                      loaded: tasks.Loaded, config, clock: Clock) -> dict:
  """The task's evaluation (`lm_jax.tasks`), a checkpoint, the record in
  the logs, and the task's samples printed.

  The model is evaluated and sampled at the optimiser's evaluation point
  (`steps.eval_params`: schedule-free AdamW's average). The record's
  elapsed_s is when the evaluated parameters were ready (this evaluation
  not included); eval_s the seconds spent evaluating before it.
  """
  params = steps.eval_params(state.params, state.opt_state)
  record, lines, texts = task.evaluate(params, model, loaded, step, config)
  record.update(elapsed_s=clock.eval_started, eval_s=clock.eval_s)
  # The record only once its checkpoint is committed: a failed save (a full
  # disk) leaves no val record of a checkpoint that does not exist.
  checkpoints.save(mngr, step, state, record["val_loss"], clock.saved())
  log.write(**record)
  print("\n".join(lines) + f" | best step {mngr.best_step()}", flush=True)
  for name, text in texts.items():
    print("-" * 20 + f" {name} " + "-" * 20)
    print(text)
    log.text(step, name, text)
    print("-" * 48, flush=True)
  return record
