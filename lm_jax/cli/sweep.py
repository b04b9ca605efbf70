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
_EQUAL_TIME = flags.DEFINE_float(
    "equal_time", None, "S: every member trains S training seconds "
    "(config.train.max_seconds=S: evaluations, compiling and start-up not "
    "counted), or to its num_steps if that comes first; a group's members "
    "stop together. The schedule spans num_steps: set it near what S "
    "reaches.",
    flag_values=FLAGS)
_X = flags.DEFINE_enum(
    "x", "steps", ["steps", "seconds", "tokens"], "sweep.png's x axis for "
    "the val curves: steps, training seconds or tokens seen.",
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
  overrides = flag_parsing.config_overrides(FLAGS)
  if _EQUAL_TIME.value is not None:
    equal_time(config, overrides, sets, _EQUAL_TIME.value)
  members = grid.make_members(config.copy_and_resolve_references, sets,
                              _ZIP.value, workdir, overrides)
  groups = plan.make_plan(members)
  print(plan.describe(groups))
  if _SHOW.value:
    return None
  command = shlex.join(["lm-jax-sweep", *argv])
  report = Reporter(groups, time.perf_counter())
  try:
    with preemption.StopOnSignal() as stop:
      population.train_groups(groups, stop, started, report)
    corpus = [f"group {g.index + 1}: {g.loaded.lines[0]}" for g in groups]
    for path in results.write(members, workdir, command, corpus, _X.value):
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


def equal_time(config, overrides: dict, sets: list, seconds: float) -> None:
  """--equal_time=S: config.train.max_seconds=S in the base config and in
  every member's (an override); refused beside another budget."""
  if not seconds > 0:
    raise UserError(f"--equal_time={seconds:g}: give a positive number of "
                    "training seconds, e.g. --equal_time=60")
  if "train.max_seconds" in overrides or any(
      k == "train.max_seconds" for k, _ in sets):
    raise UserError("--equal_time sets config.train.max_seconds for every "
                    "member: drop the other train.max_seconds")
  config.train.max_seconds = float(seconds)
  overrides["train.max_seconds"] = float(seconds)


class Reporter:
  """Progress lines: the group, its members, the losses' range, elapsed
  time and the ETA of the group and of the sweep: the groups still to
  run, each estimated at this group's seconds per member-step and device,
  plus this group's start (loading, compiling: from the end of the last
  group to this one's first line)."""

  def __init__(self, groups, started: float):
    self.groups, self.started = groups, started
    self.last = started  # when the last line was printed
    self.start_s: dict[int, float] = {}  # a group's start-up seconds

  def __call__(self, group, step: int, records: list[dict],
               steps_per_s: float | None) -> None:
    now = time.perf_counter()
    self.start_s.setdefault(group.index, now - self.last)
    self.last = now
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
      if t.get("max_seconds"):  # a budget: its seconds left, if sooner
        trained = min(r.get("train_s", 0.0) for r in records)
        left = min(left, max(t.max_seconds - trained, 0.0) * m / group.devices)
      per_member_step = group.devices / (steps_per_s * m)
      rest = self.groups[group.index + 1:]
      later = sum(estimate_s(g, per_member_step) for g in rest)
      later += len(rest) * self.start_s[group.index]
      parts.append(f"ETA group {progress.duration(left)}"
                   + (f", sweep {progress.duration(left + later)} ("
                      f"{len(rest)} more group(s) to run)" if rest else ""))
    print(" | ".join(parts), flush=True)


def estimate_s(group, per_member_step: float) -> float:
  """A group's training seconds at `per_member_step` seconds per member
  step and device, or its budget of training seconds if that ends it
  first."""
  t = group.config.train
  steps_s = t.num_steps * len(group.members) / group.devices * per_member_step
  if t.get("max_seconds"):
    return min(steps_s, t.max_seconds * len(group.members) / group.devices)
  return steps_s


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, lambda: sweep(argv),
                           _DEFINE_CONFIG)


def cli() -> None:
  """The `lm-jax-sweep` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
