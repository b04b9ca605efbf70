"""Process set-up shared by the commands and the benchmarks: CPU devices,
the compilation cache, the process clock, and errors as one line."""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
from typing import Callable, NoReturn

from lm_jax import outputs
from lm_jax.errors import UserError


def process_seconds() -> float:
  """Wall seconds since this process started (Linux: /proc), so that a
  command's clock counts its start-up and imports; 0 where unknown."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rpartition(")")[2].split()[19])  # starttime
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return 0.0
  return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def cpu_device_count(requested: int, batch_size: int) -> int:
  """How many JAX CPU devices to make: `requested`, or for 0 one per core,
  lowered to its largest divisor that also divides the batch (their gcd)."""
  n = requested if requested > 0 else (os.cpu_count() or 1)
  return max(1, math.gcd(n, max(1, batch_size)))


def use_cpu_cores(requested: int, batch_size: int) -> int | None:
  """Splits the CPU into several JAX devices, one per core, before JAX starts.

  One CPU device runs each operation of a small model on all cores, and on
  a 2-core machine the threads spend much of a step waiting for each other;
  with one device per core, each core trains its slice of the batch
  (lm_jax/training/parallel.py) and the two meet once per step to add gradients:
  about 1.5x the tokens/s of the default char_tf config on 2 cores (see
  docs/DEVICES.md). The results are those of one device
  (tests/training/test_parallel.py).
  Returns the count set, or None where XLA_FLAGS already sets one or JAX
  has started (its device count can no longer change).
  """
  import jax
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  n = cpu_device_count(requested, batch_size)
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # backends already initialised (e.g. in a notebook)
    return None
  return n


def use_compilation_cache() -> str | None:
  """Keeps XLA's compiled programs on disk, so that running a config again
  skips compiling (seconds on a small CPU for the train step, evaluation
  and the sampler): $XDG_CACHE_HOME/lm_jax/xla, else ~/.cache/lm_jax/xla;
  and the train step whole in its programs/ (lm_jax/training/programs.py).

  JAX_COMPILATION_CACHE_DIR, when set, chooses instead (an empty value: no
  cache). A folder that cannot be written turns the cache off with one
  line on stderr (JAX would warn at every compile). Returns the folder
  chosen here, or None.
  """
  import jax
  chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if chosen is None:
    path = str(outputs.cache_dir("xla"))
  elif not chosen:
    return None
  else:
    path = chosen
  problem = unwritable(path)
  if problem:
    print(f"note: no compilation cache (cannot write {path}: {problem}); "
          "each run compiles afresh; set JAX_COMPILATION_CACHE_DIR to a "
          "writable folder, or to nothing to silence this", file=sys.stderr)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  # Beside XLA's programs, lm_jax keeps the train step's whole, so that a
  # start skips tracing it too (lm_jax/training/programs.py).
  from lm_jax.training import programs
  if os.environ.get("LM_JAX_PROGRAM_CACHE", "1") != "0":
    programs.use_folder(os.path.join(path, "programs"))
  if chosen is None:
    jax.config.update("jax_compilation_cache_dir", path)
    return path
  return None


def unwritable(folder: str) -> str | None:
  """Why files cannot be written in `folder` (made if missing), or None."""
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def run_main(main, *args) -> int:
  """Calls main(*args) and returns the exit status: main's own (None: 0),
  2 for a UserError (one line on stderr), 130 for Ctrl-C outside the
  training loop (which handles it itself) and 1 for a closed pipe, each
  without a traceback. An error whose `skip_teardown` is set (a failed
  checkpoint write) asks `run_cli` to end the process at once.
  """
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # Orbax logs every file it writes
  use_compilation_cache()
  try:
    return main(*args) or 0
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    if e.skip_teardown:
      _exit_at_once.set()
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # the reader left early (`--show_config | head`)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


# Set by run_main when the interpreter's teardown must be skipped.
_exit_at_once = threading.Event()


def run_cli(main: Callable[[list[str]], int]) -> NoReturn:
  """A console script: absl's process set-up (its log handler), then
  `main(sys.argv[1:])`, whose status the process exits with.

  Once main has ended, a Ctrl-C (during the interpreter's teardown) ends
  the process at once, silently; after an error that asked for it, the
  process ends without the teardown: Orbax's writer threads would print
  tracebacks while the interpreter shuts down.
  """
  from absl import app, flags

  def run(argv: list[str]) -> int:
    _exit_at_once.clear()
    code = main(argv[1:])
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _exit_at_once.is_set():
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)
    return code

  def no_global_flags(argv: list[str]) -> list[str]:
    # absl's own flags at their defaults (the log level); each command
    # parses its own flags (lm_jax/cli/flag_parsing.py).
    flags.FLAGS(argv[:1])
    return argv

  app.run(run, flags_parser=no_global_flags)
