"""Process setup shared by the entry points and the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune_malloc() -> bool:
  """Keeps freed memory in the process instead of returning it to the OS.

  XLA on CPU allocates fresh buffers for every call; by default glibc serves
  large ones with new page mappings and unmaps them on free, and the page
  faults that follow cost about 30% of a small model's step time on a 2-core
  machine. The same effect as setting MALLOC_MMAP_MAX_=0,
  MALLOC_TRIM_THRESHOLD_=<huge> and MALLOC_ARENA_MAX=1, done in-process so
  that nobody needs to set them. Returns False where there is no glibc.
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


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad flag or config override as one line."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    message = str(e).strip().strip('"').replace("\n", " ")
    if isinstance(e, (KeyError, AttributeError)):
      message = f"unknown config key {message}"
    print(f"error: {message}; see --helpfull for the flags and the config "
          "file for its keys", file=sys.stderr)
    sys.exit(2)


def run_main(main, *args) -> None:
  """Calls main(*args); a UserError becomes one line on stderr and exit 2."""
  from absl import logging
  from lm_jax.errors import UserError
  logging.set_verbosity(logging.ERROR)  # Orbax logs every file it writes
  try:
    main(*args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
