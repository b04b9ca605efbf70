"""Orbax checkpoints of a run: keep the latest and the best by val loss.

A run directory holds `checkpoints/<step>/` folders written by an Orbax
`CheckpointManager`. Two preservation policies combine: `LatestN(1)` keeps
the newest checkpoint (so a resume never goes back in time) and `BestN(1)`
the lowest validation loss (what sampling loads). A best-only policy would
delete the latest checkpoint whenever validation got worse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import pathlib
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import jax

from lm_jax.errors import UserError


class _Orbax:
  """`orbax.checkpoint`, imported at first use: about 0.15 s of a small
  CPU's start-up, which a fresh run pays at its first save, after its
  first step, and a command that reads no checkpoint never pays."""

  def __getattr__(self, name: str):
    import orbax.checkpoint
    return getattr(orbax.checkpoint, name)


ocp = _Orbax()
if TYPE_CHECKING:  # the annotations name Orbax's types; nothing imported
  import orbax.checkpoint

T = TypeVar("T")
DIRECTORY = "checkpoints"  # inside the run directory
VAL_LOSS = "val_loss"
# How TensorStore (under Orbax) reports a failed write: "... [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")


class SaveFailed(UserError):
  """A checkpoint write failed; its writer threads are left in a state that
  prints tracebacks at interpreter exit, so entry points skip the teardown
  (process.run_main)."""
  skip_teardown = True


def has_steps(workdir: str | pathlib.Path) -> bool:
  """Whether the run directory holds a checkpoint folder (`<step>/`),
  finished or not, seen without Orbax."""
  folder = pathlib.Path(workdir) / DIRECTORY
  return folder.is_dir() and any(p.name[:1].isdigit()
                                 for p in folder.iterdir())


class LazyManager:
  """A run's checkpoint manager (`manager`), opened at first use."""

  def __init__(self, workdir: str | pathlib.Path):
    self._workdir, self._manager = workdir, None

  def __getattr__(self, name: str):
    if self._manager is None:
      self._manager = manager(self._workdir)
    return getattr(self._manager, name)


def manager(workdir: str | pathlib.Path, read_only: bool = False
            ) -> orbax.checkpoint.CheckpointManager:
  """The checkpoint manager of a run directory."""
  best = lambda metrics: metrics[VAL_LOSS]
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      best_fn=best, best_mode="min",
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=1),
          policies.BestN(get_metric_fn=best, reverse=True, n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      # Each save is atomic (written to a temporary folder, then renamed);
      # temporaries left by a killed run are removed at the next start.
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=False,
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / DIRECTORY, options=options)


def save(mngr: orbax.checkpoint.CheckpointManager, step: int, state,
         val_loss: float | None = None, metadata: dict | None = None) -> None:
  """Saves the train state (a steps.TrainState) at `step`; `val_loss` ranks
  it for 'best'; `metadata` (JSON numbers, e.g. the run's wall time so far)
  goes into the step's metadata file, outside the train state, and comes
  back from `saved_metadata`.

  A failed write (a full disk, a lost mount) is a UserError naming the
  cause; the unfinished temporary folder is removed at the next start and
  the checkpoints saved before stay intact.
  """
  metrics = None if val_loss is None else {VAL_LOSS: float(val_loss)}
  previous = mngr.latest_step()
  try:
    # Orbax's writer threads log a failed write with a traceback each; we
    # report it once, below.
    with _absl_logging_off():
      mngr.save(step, args=ocp.args.StandardSave(_items(state)),
                metrics=metrics, custom_metadata=metadata,
                force=True)
      mngr.wait_until_finished()
  except (OSError, ValueError) as e:
    cause = write_error_cause(e)
    if cause is None:
      raise
    # Its writes still in flight find the event loop closed, each printing
    # a traceback: this one line reports the failure.
    quiet_abandoned_reads()
    kept = ("no earlier checkpoint" if previous is None else
            f"the checkpoint of step {previous} is intact")
    raise SaveFailed(
        f"could not save the checkpoint of step {step} in {mngr.directory}: "
        f"{cause}; {kept}; free space or fix the folder, then run the same "
        "command to resume") from None


def saved_metadata(mngr: orbax.checkpoint.CheckpointManager, step: int) -> dict:
  """The `metadata` saved with `step`; {} for a checkpoint without any."""
  return dict(mngr.metadata(step).custom_metadata or {})


@contextlib.contextmanager
def _absl_logging_off():
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    logger.setLevel(level)


def write_error_cause(e: Exception) -> str | None:
  """'No space left on device' and the like, or None if `e` is no I/O error."""
  if isinstance(e, OSError):
    return e.strerror or str(e)
  code = _OS_ERROR_CODE.search(str(e))
  return os.strerror(int(code[1])) if code else None


def _items(state) -> dict:
  """A train state's arrays by field name, as a checkpoint holds them.

  Empty fields (a None carry) are left out, so a stateless run's checkpoint
  holds step, params and opt_state alone, as it always has.
  """
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
          if f.metadata.get("pytree_node", True)
          and getattr(state, f.name) is not None}


def _abstract(target):
  """ShapeDtypeStructs with the target's shardings, else the first device's."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=getattr(x, "sharding", None) or device),
      target)


class DoesNotFit(UserError):
  """A checkpoint of another structure; its abandoned reads print "Event
  loop is closed" at interpreter exit, so entry points skip the teardown."""
  skip_teardown = True


def _does_not_fit(mngr, step: int, e: ValueError) -> UserError:
  """Orbax's error for a stored tree of another structure, as one line."""
  quiet_abandoned_reads()
  reason = str(e).strip().splitlines()[0].rstrip(":")
  return DoesNotFit(
      f"the checkpoint of step {step} in {mngr.directory} does not fit the "
      f"model and optimiser this code builds ({reason}); it was written by "
      "another version or config (a hand-edited config.json: restore it), "
      "else train in a new --workdir")


def _shapes(tree, prefix: str = "") -> dict[str, tuple]:
  """{"block_0/attn/qkv/kernel": shape} of a nested dict of arrays."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_shapes(value, f"{prefix}{key}/"))
    else:
      out[prefix + str(key)] = tuple(getattr(value, "shape", ()) or ())
  return out


def check_params_fit(mngr: orbax.checkpoint.CheckpointManager, step: int, params) -> None:
  """Refuses a checkpoint whose stored parameter shapes differ from
  `params` (arrays or ShapeDtypeStructs), from its metadata alone: no read
  starts, so none is abandoned in flight (each would print "Event loop is
  closed" when it finds the process ending)."""
  folder = pathlib.Path(mngr.directory) / str(step) / "default"
  try:
    with _absl_logging_off():
      stored = ocp.PyTreeCheckpointer().metadata(folder).item_metadata.tree
    stored = _shapes(dict(stored)["params"])
  except Exception:  # a damaged checkpoint: the read itself will say so
    return
  want = _shapes(dict(params))
  for name in sorted(want.keys() | stored.keys()):
    if stored.get(name) != want.get(name):
      have = ("none" if name not in stored else f"shape {stored[name]}")
      need = ("none" if name not in want else f"shape {want[name]}")
      raise DoesNotFit(
          f"the checkpoint of step {step} in {mngr.directory} does not fit "
          f"the model its config builds (parameter {name}: stored {have}, "
          f"the config makes {need}); a hand-edited config.json: restore "
          "it; else it was written by another version: train in a new "
          "--workdir")


def restore(mngr: orbax.checkpoint.CheckpointManager, step: int, target):
  """Restores the train state saved at `step` into the structure of `target`.

  `target` (a steps.TrainState) may hold arrays or `jax.ShapeDtypeStruct`s
  (from jax.eval_shape).
  Arrays come back with the target's shardings, so a checkpoint written on N
  devices restores on M; a target without shardings restores onto the first
  local device.
  """
  check_params_fit(mngr, step, target.params)
  try:
    restored = mngr.restore(step, args=ocp.args.StandardRestore(
        _abstract(_items(target))))
  except ValueError as e:  # Orbax: the stored tree has another structure
    raise _does_not_fit(mngr, step, e) from None
  return target.replace(**restored)


def restore_params(mngr: orbax.checkpoint.CheckpointManager, step: int, target):
  """Only the parameters of the train state saved at `step`.

  A partial restore: the optimiser state is not read, so it may have any
  structure (another optimiser, another optax version).
  """
  check_params_fit(mngr, step, target)
  item = {"params": _abstract(target)}
  try:
    restored = mngr.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(
            item), partial_restore=True))
  except ValueError as e:
    raise _does_not_fit(mngr, step, e) from None
  return restored["params"]


# Files every committed checkpoint holds (StandardSave, OCDBT format): one
# missing means a damaged folder, not a model of another shape.
_REQUIRED = ("_CHECKPOINT_METADATA", "default/_METADATA",
             "default/manifest.ocdbt")
DAMAGED = ".damaged"  # suffix of a damaged checkpoint set aside on resume


class Damaged(Exception):
  """A checkpoint folder that cannot be read: a file truncated or missing."""

  def __init__(self, folder: pathlib.Path, why: str):
    self.folder = folder
    super().__init__(f"the checkpoint {folder} cannot be read ({why})")


def _loop_closed(e: BaseException | None) -> bool:
  return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


@functools.cache
def quiet_abandoned_reads() -> None:
  """After a failed read, its other coroutines and tasks report the same
  error when collected ("Task exception was never retrieved", "Exception
  ignored in <coroutine>"), and TensorStore's reads still in flight find
  the event loop closed ("Event loop is closed", printed through
  sys.excepthook from its threads), each with a long traceback: the failure
  is reported once, by `Damaged`, so those are dropped."""
  logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
  unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

  def unraisable(report) -> None:
    if not (inspect.iscoroutine(report.object)
            or _loop_closed(report.exc_value)):
      unraisable_hook(report)

  def excepthook(kind, value, tb) -> None:
    if not _loop_closed(value):
      except_hook(kind, value, tb)

  sys.unraisablehook, sys.excepthook = unraisable, excepthook


def _read(mngr: orbax.checkpoint.CheckpointManager, step: int, read: Callable[[], T]) -> T:
  """read(), a damaged checkpoint folder raising `Damaged`."""
  folder = pathlib.Path(mngr.directory) / str(step)
  if not folder.exists():  # deleted since it was listed: not damage
    raise FileNotFoundError(f"the checkpoint {folder} is gone")
  for name in _REQUIRED:
    if not (folder / name).exists():
      raise Damaged(folder, f"{name} is missing")
  try:
    return read()
  except UserError:  # it does not fit this code: not damage
    raise
  except Exception as e:  # Orbax and TensorStore: a truncated file, ...
    quiet_abandoned_reads()
    lines = str(e).strip().splitlines() or [type(e).__name__]
    raise Damaged(folder, lines[0].split(". See full")[0][:200]) from None


class Unreadable(UserError):
  """No checkpoint can be read; the failed reads' coroutines print
  tracebacks at interpreter exit, so entry points skip the teardown."""
  skip_teardown = True


def restore_first(mngr: orbax.checkpoint.CheckpointManager, steps: list[int],
                  read: Callable[[int], T], fix: str) -> tuple[int, T]:
  """The first of `steps` whose checkpoint can be read, and `read(step)`.

  A damaged checkpoint is passed over with a note on stderr saying which
  step is used instead and why (the latest and the best are both kept, so
  there is often another); when none can be read, a UserError naming the
  damaged folder and `fix`.
  """
  damaged = []
  for step in steps:
    try:
      result = _read(mngr, step, lambda: read(step))
    except Damaged as e:
      damaged.append(e)
      continue
    for d in damaged:
      print(f"note: {d}; using the checkpoint of step {step}",
            file=sys.stderr)
    return step, result
  others = ", and no other checkpoint can be read" if len(steps) > 1 else ""
  raise Unreadable(f"{damaged[0]}{others}; {fix}")


def resume(mngr: orbax.checkpoint.CheckpointManager, target) -> tuple[int, Any]:
  """The latest readable checkpoint's (step, state) restored into `target`.

  Damaged checkpoints after it are renamed `<step>.damaged`, out of Orbax's
  sight, so the resumed run saves its next steps beside them.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  step, state = restore_first(
      mngr, steps, lambda s: restore(mngr, s, target),
      "move it away to train from the start, or pass a new --workdir")
  if step != steps[0]:
    for newer in steps[:steps.index(step)]:
      folder = pathlib.Path(mngr.directory) / str(newer)
      folder.rename(folder.with_name(folder.name + DAMAGED))
    mngr.reload()
  return step, state


def pick_step(mngr: orbax.checkpoint.CheckpointManager, step: int | None = None) -> int:
  """`step` if it was saved, else the best checkpoint's step.

  Without any evaluated checkpoint (a run interrupted before its first
  evaluation) the best is the latest.
  """
  steps = mngr.all_steps()
  if not steps:
    raise UserError(f"no checkpoint in {mngr.directory}: train first with "
                    "`python -m lm_jax.train --workdir=...`")
  if step is None:
    best = mngr.best_step()
    return mngr.latest_step() if best is None else best
  if step not in steps:
    raise UserError(f"no checkpoint at step {step}; saved steps: "
                    f"{sorted(steps)}")
  return step
