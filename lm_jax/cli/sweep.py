"""Train a grid of settings in one command: `lm-jax-sweep`.

    lm-jax-sweep --config=char_tf:baby --workdir=sweeps/lr \\
      --set=train.learning_rate=3e-4,1e-3,3e-3 --set=seed=0,1

Members that differ only in numbers (`lm_jax.sweep.hyper`) train together
as one population (`lm_jax.sweep.population`); settings that change the
program make groups, trained one after another. Each member is a run
directory under --workdir; running the same command again resumes them.
At the end: results.md, results.json and sweep.png in --workdir.
"""

import os
import pathlib
import shlex
import sys
import time

from absl import flags

from lm_jax import config as config_lib
from lm_jax.cli import flag_parsing, process
from lm_jax.errors import UserError
from lm_jax.loop import preemption
from lm_jax.views import progress

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main
_SET = flags.DEFINE_multi_string(
    "set", [], "KEY=V1,V2,...: the values of one config key to sweep "
    "(repeatable; e.g. --set=train.learning_rate=3e-4,1e-3 --set=seed=0,1); "
    "KEY `config` sweeps base configs (--set=config=char_lstm,char_gru)",
    flag_values=FLAGS)
_ZIP = flags.DEFINE_boolean(
    "zip", False, "Pair the --set lists value by value (equal lengths) "
    "instead of taking every combination.", flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The sweep's directory: one run directory per member, "
    "results.md, results.json and sweep.png. An existing one is resumed.",
    flag_values=FLAGS)
_SHOW = flags.DEFINE_boolean(
    "show", False, "Print the members and the plan (groups, devices, "
    "estimated memory) and exit without training.", flag_values=FLAGS)


_DEFINE_CONFIG = flag_parsing.config_flag(
    "The base config every member starts from: a shipped config by name "
    f"({', '.join(config_lib.shipped_configs())}; e.g. char_tf:baby) or "
    "a file; --config.KEY=V overrides it for all members")


def sweep(argv: list[str]) -> int | None:
  """Trains the grid; `argv` (the command's arguments) goes into the
  results; the exit status after a signal."""
  # One JAX device per core before JAX starts: members split over them.
  process.use_cpu_cores(0, os.cpu_count() or 1)
  from lm_jax.sweep import grid, plan, population, results

  started = time.perf_counter() - process.process_seconds()
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the folder the members' runs "
                    "and the results go to, e.g. --workdir=sweeps/lr")
  workdir = pathlib.Path(_WORKDIR.value)
  sets = grid.parse_sets(_SET.value)
  config = flag_parsing.config_value(FLAGS["config"])
  members = grid.make_members(config.copy_and_resolve_references, sets,
                              _ZIP.value, workdir)
  groups = plan.make_plan(members)
  print(plan.describe(groups))
  if _SHOW.value:
    return None
  command = shlex.join(["lm-jax-sweep", *argv])
  report = Reporter(groups, time.perf_counter())
  try:
    with preemption.StopOnSignal() as stop:
      population.train_groups(groups, stop, started, report)
    for path in results.write(members, workdir, command):
      print(f"{path.suffix[1:]}: {path}")
  except preemption.Interrupted as e:
    print(f"stopped by signal at step {e.step}; every member is saved; "
          f"resume with:\n  {preemption.resume_command()}", file=sys.stderr)
    return 128 + e.signum
  except OSError as e:  # a full disk, a lost mount: saved members stay
    raise WriteFailed(
        f"could not write {e.filename or workdir}: {e.strerror or e}; the "
        "members' checkpoints saved before stay; free space or fix the "
        "folder, then run the same command to continue") from None
  return None


class WriteFailed(UserError):
  """A write of the sweep failed: Orbax's and TensorBoard's writer threads
  may print tracebacks at interpreter exit, so the teardown is skipped."""
  skip_teardown = True


class Reporter:
  """Progress lines: the group, its members, the losses' range, elapsed
  time and the ETA of the group and of the sweep (later groups estimated
  at this group's seconds per member-step and device)."""

  def __init__(self, groups, started: float):
    self.groups, self.started = groups, started

  def __call__(self, group, step: int, records: list[dict],
               steps_per_s: float | None) -> None:
    t = group.config.train
    m = len(group.members)
    losses = [r["loss"] for r in records]
    parts = [f"group {group.index + 1}/{len(self.groups)}", f"{m} members",
             f"step {step}/{t.num_steps}",
             f"loss {min(losses):.4f}..{max(losses):.4f}"]
    if steps_per_s:
      parts.append(f"{steps_per_s * t.batch_size * t.seq_len:,.0f} tok/s "
                   "per member")
    parts.append(f"elapsed {progress.duration(time.perf_counter() - self.started)}")
    if steps_per_s:
      left = (t.num_steps - step) / steps_per_s
      per_member_step = group.devices / (steps_per_s * m)
      later = sum(g.config.train.num_steps * len(g.members) / g.devices
                  for g in self.groups[group.index + 1:]) * per_member_step
      parts.append(f"ETA group {progress.duration(left)}"
                   + (f", sweep {progress.duration(left + later)}"
                      if later else ""))
    print(" | ".join(parts), flush=True)


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, lambda: sweep(argv),
                           _DEFINE_CONFIG)


def cli() -> None:
  """The `lm-jax-sweep` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
