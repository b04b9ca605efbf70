"""Process setup shared by the entry points and the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune_malloc() -> bool:
  """Keeps freed memory in the process instead of returning it to the OS.

  The same effect as setting MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=<huge>
  and MALLOC_ARENA_MAX=1, done in-process. An earlier jax release lost
  about 30% of a small model's step to page faults from fresh buffers and
  this setting won it back; with jax 0.10.2 it slows the small models (the
  Levers table of experiments/results/cpu.md), and on the 6-layer/384
  model it cuts the page faults fourfold and runs about 7% faster, but
  nearly doubles the peak memory (experiments/results/cpu_gpt6_levers.md),
  so no entry point calls it. The throughput benchmark keeps it as one of
  its measured levers. Returns False where there is no glibc.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  # mallopt takes a C int; glibc stores the trim threshold as size_t, so -1
  # becomes SIZE_MAX: never give the top of the heap back.
  return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1)
              and mallopt(_M_ARENA_MAX, 1))


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
  (lm_jax/parallel.py) and the two meet once per step to add gradients:
  about 1.5x the tokens/s of the default char_tf config on 2 cores (see
  docs/DEVICES.md). The results are those of one device
  (tests/test_parallel.py).
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


def gpu_warning(backend: str) -> str | None:
  """A line for when `nvidia-smi` sees a GPU but JAX runs on `backend` "cpu"
  (the CPU-only jaxlib, or a driver too old for the CUDA wheels)."""
  if backend != "cpu" or not shutil.which("nvidia-smi"):
    return None
  try:
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                           timeout=20).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return None
  return ("warning: nvidia-smi sees a GPU but JAX uses only the CPU; install "
          'the CUDA wheels with pip install ".[gpu]" (docs/GPU.md)'
          if found else None)


# Python's words for a value of the wrong type, and plainer ones.
_TYPE_ERRORS = (
    (re.compile(r"invalid literal for int\(\) with base 10: (.*)"),
     r"expected an integer, got \1"),
    (re.compile(r"could not convert string to float: (.*)"),
     r"expected a number, got \1"),
)


def flag_error_message(e: Exception, argv: tuple[str, ...] = ()) -> str:
  """One line for an error raised while parsing flags and the config file."""
  # str() of a KeyError is the repr of its message, and ml_collections may
  # wrap one in an AttributeError: unwrap to the message itself.
  while isinstance(e, (KeyError, AttributeError)) and e.args and isinstance(
      e.args[0], KeyError):
    e = e.args[0]
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  lines = [l.strip() for l in text.strip().strip('"').splitlines()
           if l.strip()]
  if isinstance(e, OSError):  # ml_collections: the config file did not load
    return (f"cannot load the config file: {lines[-1]}; pass an existing "
            "file or a shipped name, e.g. --config=char_tf")
  if isinstance(e, SyntaxError):
    return (f"the config file {e.filename} is not valid Python (line "
            f"{e.lineno}: {e.msg}); pass a config file such as "
            "configs/char_tf.py")
  if any("Traceback (most recent call last)" in l for l in lines):
    # An error raised by the config file's get_config: its last line says it.
    return f"bad --config: {lines[-1]}"
  message = " ".join(lines)
  if isinstance(e, (KeyError, AttributeError)):
    # ml_collections names one key (and may suggest a close one); the flag
    # it came from names the whole path.
    key, hint = lines[0], " ".join(lines[1:])
    names = [a.partition("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((n for n in names if key.strip("'") in n.split(".")), None)
    where = f" in {flag}" if flag else ""
    hint = f" ({hint[0].lower()}{hint[1:]})" if hint else ""
    return (f"unknown config key {key}{where}{hint}; --show_config lists "
            "the keys")
  for pattern, plain in _TYPE_ERRORS:
    message = pattern.sub(plain, message)
  return message + "; see --helpfull for the flags"


def configs_dir() -> pathlib.Path:
  """The shipped configs: lm_jax/configs in a wheel, configs/ in a clone."""
  package = pathlib.Path(__file__).parent
  installed = package / "configs"
  return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
  return sorted(p.stem for p in configs_dir().glob("*.py")
                if not p.stem.startswith("_"))


def resolve_config(value: str) -> str:
  """`char_tf:smoke` -> `<configs_dir>/char_tf.py:smoke`; a path is kept.

  absl's config flag takes a file path; a bare name lets an installed
  package find its own configs from any directory.
  """
  from lm_jax.errors import UserError
  name, colon, variant = value.partition(":")
  if not name or "/" in name or name.endswith(".py") or os.path.exists(name):
    return value
  path = configs_dir() / f"{name}.py"
  if not path.is_file():
    raise UserError(f"unknown config {name!r}: pass a config file or one of "
                    f"{', '.join(shipped_configs())}")
  return f"{path}{colon}{variant}"


def resolve_config_args(argv: list[str]) -> list[str]:
  """argv with each --config=NAME (or --config NAME) resolved to a path."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + resolve_config(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad flag, override or config file as one line."""
  from absl import flags

  from lm_jax.errors import UserError
  try:
    return flags.FLAGS(resolve_config_args(argv))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError,
          OSError, SyntaxError) as e:
    print(f"error: {flag_error_message(e, argv)}", file=sys.stderr)
    sys.exit(2)


def config_value(holder):
  """The config of a `config_flags` flag; a file that failed to load raises
  UserError (ml_collections defers that error to the first use)."""
  from lm_jax.errors import UserError
  config = holder.value
  try:
    config.get("model")
  except OSError as e:
    raise UserError(flag_error_message(e)) from None
  return config


def use_compilation_cache() -> str | None:
  """Keeps XLA's compiled programs on disk, so that running a config again
  skips compiling (seconds on a small CPU for the train step, evaluation
  and the sampler): $XDG_CACHE_HOME/lm_jax/xla, else ~/.cache/lm_jax/xla.

  JAX_COMPILATION_CACHE_DIR, when set, chooses instead (an empty value: no
  cache). Returns the folder chosen here, or None.
  """
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return None
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  path = os.path.join(base, "lm_jax", "xla")
  import jax
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def run_main(main, *args) -> None:
  """Calls main(*args); a UserError becomes one line on stderr and exit 2.

  Ctrl-C outside the training loop (which handles it itself) exits 130
  without a traceback, and so does a closed pipe (status 1). An error whose
  `skip_teardown` is set (a failed checkpoint write) exits at once: Orbax's
  writer threads would print tracebacks while the interpreter shuts down.
  """
  from absl import logging
  from lm_jax.errors import UserError
  logging.set_verbosity(logging.ERROR)  # Orbax logs every file it writes
  use_compilation_cache()
  try:
    main(*args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    if e.skip_teardown:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(2)
    sys.exit(2)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
  except BrokenPipeError:  # the reader left early (`--show_config | head`)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
