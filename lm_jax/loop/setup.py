"""Everything the loop needs before its first step: checked settings, the
task's data on device, the model, the state (fresh or resumed), the
checkpoint manager and the logs, and the lines that describe them."""

from __future__ import annotations

import contextlib
import pathlib
import sys
from typing import Any, NamedTuple

import jax
import ml_collections

from lm_jax import config as config_lib, tasks
from lm_jax.data import windows
from lm_jax.loop.clock import Clock
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, rundir
from lm_jax.runs.metrics import MetricsLog
from lm_jax.training import parallel, steps
from lm_jax.views import progress, summary


class Setup(NamedTuple):
  """A run ready to train: what `set_up` built."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  task: tasks.Task
  loaded: tasks.Loaded
  model: Any  # an lm_jax.models.base.Model
  state: steps.TrainState  # at `start`, or fresh
  start: int | None  # the step resumed from; None: a fresh run
  mesh: jax.sharding.Mesh
  train_data: Any  # the task's training data, on device
  seed_key: jax.Array  # the data order and dropout (steps.step_keys)
  mngr: Any  # the Orbax CheckpointManager (checkpoints.LazyManager)
  log: MetricsLog
  # The compiled train steps by form (a whole call or not), made at the
  # first call of each (lm_jax/loop/trainer.py: train_chunk).
  programs: dict


def set_up(config: ml_collections.ConfigDict, workdir: pathlib.Path,
           hold: contextlib.ExitStack, clock: Clock) -> Setup:
  """Checks, loads and builds the run in `workdir`, resuming it if it has a
  checkpoint; the run directory's lock goes on `hold`.

  Every check on the user's input comes before the first write.
  """
  config_lib.validate(config)
  parallel.maybe_initialize_distributed(config)
  mesh = parallel.make_mesh(config.train.batch_size)
  clock.mark("devices")
  progress.phase("loading the corpus")
  task = tasks.task_for(config)
  loaded = task.load(config, workdir)
  clock.mark("data")
  model = make_model(config.model, loaded.tokenizer.vocab_size)
  summary.check_fits(model, config.train)  # before anything is written
  if jax.process_index() == 0:  # several processes: process 0 writes
    rundir.prepare(workdir)
    hold.enter_context(rundir.lock(workdir))
    rundir.write_run(workdir, config, loaded.tokenizer)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  state = parallel.place_state(
      steps.create_train_state(model, config.train, init_key, stored=True,
                               objective=task.objective),
      mesh, config.train.fsdp)
  clock.mark("state")
  # A fresh run opens its checkpoint manager (and imports Orbax) at its
  # first save; one with checkpoints opens it now, to resume.
  mngr = checkpoints.LazyManager(workdir)
  start = mngr.latest_step() if checkpoints.has_steps(workdir) else None
  if start is not None:
    start, state = checkpoints.resume(mngr, state)
    clock.resume(checkpoints.saved_metadata(mngr, start))
  run = Setup(config, workdir, task, loaded, model, state, start, mesh,
              jax.device_put(loaded.train, parallel.replicated(mesh)),
              seed_key, mngr, MetricsLog(workdir, resume_step=start), {})
  clock.mark("checkpoints")
  announce(run)
  return run


def announce(run: Setup) -> None:
  """What the run is: data, model, devices, and where it starts."""
  t, start = run.config.train, run.start
  print(f"workdir: {run.workdir}")
  print("\n".join(run.loaded.lines))
  print(summary.model_summary(run.model, run.state.params, t))
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
        + (", parameters sharded (FSDP)" if t.fsdp else ""))
  warning = progress.gpu_warning(jax.default_backend())
  if warning:
    print(warning, file=sys.stderr)
  if t.carry_state:
    n = len(run.loaded.train)
    print(f"carrying the recurrent state (truncated BPTT): {t.batch_size} lanes "
          f"of {windows.lane_length(n, t.batch_size):,} tokens, "
          f"{windows.lane_windows(n, t.batch_size, t.seq_len):,} "
          f"windows of {t.seq_len} each")
  if start is not None and start >= t.num_steps:
    print(f"already complete at step {start} (config.train.num_steps="
          f"{t.num_steps}); raise it to train further, e.g. "
          f"--config.train.num_steps={2 * t.num_steps}")
  elif start is not None:
    print(f"resuming from step {start}")
    change = rundir.schedule_change(run.workdir, run.config, start)
    if change:  # another num_steps or rate: the schedule is redrawn
      print(change)
