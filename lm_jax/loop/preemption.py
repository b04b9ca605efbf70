"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill).

The first signal only raises a flag: the training loop finishes the jitted
chunk in flight, saves a checkpoint at that step and raises `Interrupted`.
The handler also restores the signals' default action, so a second Ctrl-C
ends the process at once, even inside a long XLA call. That is as safe as
`kill -9`: Orbax writes a checkpoint to a temporary folder and renames it
when complete, so the last committed checkpoint survives and the unfinished
folder is removed at the next start.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int, workdir: os.PathLike):
    self.signum, self.step, self.workdir = signum, step, workdir
    super().__init__(f"stopped by {signal.Signals(signum).name} at step "
                     f"{step}; checkpoint saved in {workdir}")


class StopOnSignal:
  """Context manager: `requested` becomes the first SIGINT/SIGTERM received.

  Outside the main thread (where Python cannot install handlers) it does
  nothing and signals keep their usual effect.
  """

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def __enter__(self) -> "StopOnSignal":
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum: int, frame) -> None:
    self.signum = signum
    for s in SIGNALS:  # the next signal takes effect at once
      signal.signal(s, signal.SIG_DFL)
    # os.write, not print: the handler may interrupt a print in progress.
    os.write(2, (f"\n{signal.Signals(signum).name}: saving a checkpoint after "
                 "the current steps, then stopping; press Ctrl-C again to "
                 "quit at once (the last saved checkpoint stays)\n").encode())


def resume_command() -> str:
  """The command line of this process, ready to paste from any directory.

  It starts in this process's directory: relative paths in the flags mean
  what they meant, and `python -m lm_jax...` finds the package as it did
  (a clone's root is on the path only when it is the current directory).
  A package found through PYTHONPATH is named in the command.
  """
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  program = ["-m", spec.name] if spec else [sys.argv[0]]  # python -m X / a file
  command = shlex.join([sys.executable, *program, *sys.argv[1:]])
  root = pathlib.Path(__file__).resolve().parents[1]  # holds lm_jax/
  cwd = os.getcwd()
  on_path = [pathlib.Path(p).resolve() for p in
             os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  if root in on_path and pathlib.Path(cwd).resolve() != root:
    command = f"PYTHONPATH={shlex.quote(str(root))} {command}"
  return f"cd {shlex.quote(cwd)} && {command}"
