"""Everything the loop needs before its first step: checked settings, the
task's data on device, the model, the state (fresh or resumed), the
checkpoint manager and the logs, and the lines that describe them; for a
population, each member's run directory and state (`set_up_members`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import sys
from typing import Any, NamedTuple

import jax
import ml_collections

from lm_jax import config as config_lib, tasks
from lm_jax.data import windows
from lm_jax.errors import UserError
from lm_jax.loop.clock import Clock
from lm_jax.models import make_model
from lm_jax.runs import checkpoints, hf_checkpoint, rundir
from lm_jax.runs.metrics import MetricsLog
from lm_jax.training import parallel, steps, streaming
from lm_jax.views import progress, summary


# In a member's run directory: the step it diverged at, so that a resumed
# population knows why its checkpoint lags behind the others'.
DIVERGED_FILE = "diverged.json"


def diverged_step(workdir: pathlib.Path) -> int | None:
  """The step the run in `workdir` diverged at (DIVERGED_FILE); None: not."""
  marker = workdir / DIVERGED_FILE
  return json.loads(marker.read_text())["step"] if marker.exists() else None


@dataclasses.dataclass
class Member:
  """One model in training: what the actions read and write of it."""
  name: str
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mngr: Any  # its Orbax CheckpointManager (checkpoints.LazyManager)
  log: MetricsLog
  clock: Clock  # its wall clock, as its metrics.jsonl and checkpoints hold it
  diverged_at: int | None = None  # then neither evaluated nor saved again
  evaluated: dict = dataclasses.field(default_factory=dict)  # the last eval

  def diverge(self, step: int) -> None:
    """Marks the member diverged at `step`, in its run directory too."""
    self.diverged_at = step
    rundir.write_atomically(self.workdir / DIVERGED_FILE,
                            lambda p: p.write_text(json.dumps(
                                {"step": step}) + "\n"))


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
  # The task's training data, on device; a text's is a streaming.Stream
  # that reads each chunk's windows on host (task.streams).
  train_data: Any
  seed_key: jax.Array  # the data order and dropout (steps.step_keys)
  mngr: Any  # the Orbax CheckpointManager (checkpoints.LazyManager)
  log: MetricsLog
  # The compiled train steps by form (a whole call or not), made at the
  # first call of each (lm_jax/loop/stepper.py: Lone.advance).
  programs: dict


def set_up(config: ml_collections.ConfigDict, workdir: pathlib.Path,
           hold: contextlib.ExitStack, clock: Clock) -> Setup:
  """Checks, loads and builds the run in `workdir`, resuming it if it has a
  checkpoint; the run directory's lock goes on `hold`.

  Every check on the user's input comes before the first write.
  """
  checkpoint = hf_checkpoint.apply(config)  # --config.init_from: its model
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
    claim(workdir, config, loaded.tokenizer, hold)
  init_key, seed_key = jax.random.split(jax.random.key(config.seed))
  state = parallel.place_state(
      steps.create_train_state(
          model, config.train, init_key, stored=True,
          objective=task.objective, params=checkpoint and
          hf_checkpoint.initial_params(checkpoint, config.model)),
      mesh, config.train.fsdp)
  clock.mark("state")
  # A fresh run opens its checkpoint manager (and imports Orbax) at its
  # first save; one with checkpoints opens it now, to resume.
  mngr = checkpoints.LazyManager(workdir)
  start, state = restore(workdir, mngr, state, clock)
  train_data = (streaming.Stream(loaded.train, config.train, seed_key, mesh)
                if task.streams else
                jax.device_put(loaded.train, parallel.replicated(mesh)))
  run = Setup(config, workdir, task, loaded, model, state, start, mesh,
              train_data, seed_key, mngr,
              MetricsLog(workdir, resume_step=start), {})
  clock.mark("checkpoints")
  announce(run)
  return run


def claim(workdir: pathlib.Path, config: ml_collections.ConfigDict,
          tokenizer, hold: contextlib.ExitStack) -> None:
  """Makes `workdir` the run directory of `config` (config.json,
  tokenizer.json), its lock held on `hold`."""
  rundir.prepare(workdir)
  hold.enter_context(rundir.lock(workdir))
  rundir.write_run(workdir, config, tokenizer)


def restore(workdir: pathlib.Path, mngr, state: steps.TrainState,
            clock: Clock) -> tuple[int | None, steps.TrainState]:
  """The step and state of the latest checkpoint in `workdir`, its clock
  resumed; (None, `state`) without one."""
  # Without a checkpoint folder, the manager (and Orbax) opens at the
  # first save.
  start = mngr.latest_step() if checkpoints.has_steps(workdir) else None
  if start is None:
    return None, state
  start, state = checkpoints.resume(mngr, state)
  clock.resume(checkpoints.saved_metadata(mngr, start))
  return start, state


def set_up_members(specs: list, model, objective: steps.Objective, tokenizer,
                   hold: contextlib.ExitStack, started: float, label: str
                   ) -> tuple[list[Member], list[steps.TrainState], int]:
  """A population's members (`specs`: each with a name, config and
  workdir), their train states restored from their latest checkpoints (or
  fresh), and the step they continue from.

  Each member is an ordinary run directory, locked on `hold`; its clock
  starts at `started`. `label` names the population in what it prints.
  """
  for s in specs:
    claim(s.workdir, s.config, tokenizer, hold)
  restored = []  # (clock, checkpoint manager, start, state) of each
  for s in specs:
    clock, mngr = Clock(started), checkpoints.LazyManager(s.workdir)
    init_key, _ = jax.random.split(jax.random.key(s.config.seed))
    fresh = steps.create_train_state(model, s.config.train, init_key,
                                     objective=objective)
    restored.append((clock, mngr, *restore(s.workdir, mngr, fresh, clock)))
  diverged = [diverged_step(s.workdir) for s in specs]
  start = common_start(label, [s.name for s in specs],
                       [r[2] for r in restored], diverged)
  members = [Member(s.name, s.config, s.workdir, mngr,
                    MetricsLog(s.workdir, resume_step=start), clock, at)
             for s, (clock, mngr, _, _), at in zip(specs, restored, diverged)]
  step, num_steps = start or 0, specs[0].config.train.num_steps
  if step >= num_steps:
    print(f"{label}: already complete at step {step}")
  return members, [r[3] for r in restored], step


def common_start(label: str, names: list[str], starts: list[int | None],
                 diverged: list[int | None]) -> int | None:
  """The step the members resume from (None: the start): the one their
  live members were saved at; a diverged member's checkpoint lags behind.
  """
  live = [s for s, d in zip(starts, diverged) if d is None]
  if len(set(live)) > 1:
    saved = ", ".join(f"{n}: {s}" for n, s in zip(names, starts))
    raise UserError(
        f"the members of {label} were saved at different steps ({saved}), "
        f"a sweep killed while saving; move the members ahead of step "
        f"{min(s or 0 for s in live)} away to train them again, or use a "
        "new --workdir")
  return (live or starts)[0]


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
