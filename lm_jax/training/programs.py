"""Compiled programs kept whole on disk, so that a command run again starts
its first train step without tracing the model.

JAX's compilation cache (lm_jax/cli/process.py: use_compilation_cache)
skips XLA's compiling, but a cache hit still needs the program's StableHLO
as its key, so every start traces the model, its gradient and the optimiser
in Python and lowers them: about 0.9 s of the fast config's 1.4 s to its
first step on a 2-core CPU. Here the compiled executable itself is stored
(jax.experimental.serialize_executable), under a key made of everything
the program is a function of:

- the run's model and train settings (config.model, config.train),
- each argument's path, shape, dtype and sharding, and the static ones,
- the source of the lm_jax modules traced into it (`TRACED`), and the
  versions of jax, jaxlib, flax and optax; the backend, its devices,
  XLA_FLAGS and the JAX options that change programs.

Anything else that changes is a new key, so a stale program is never run;
the worst case is a miss, which traces and compiles as usual and stores the
result. A program that calls outside XLA (a custom call, such as LAPACK's
QR in an orthogonal init) is never stored: the function it calls is
registered while lowering, which a start from the store skips. An entry that cannot be read or written is passed over. Off unless
a command turns it on (`use_folder`), as it does with JAX's own cache;
LM_JAX_PROGRAM_CACHE=0 keeps it off.

JAX has no public way to save a program's input and output structure with
it (a TrainState's structure holds the model and the optimiser, which do
not pickle): the input structure is taken from the arguments of the call,
and the output structure comes from `describe_out`/`rebuild_out`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pathlib
import pickle
import re
from typing import Any, Callable

import jax

from lm_jax import outputs

_FOLDER: pathlib.Path | None = None


def use_folder(folder: str | os.PathLike | None) -> None:
  """Keeps compiled programs in `folder` (None: not at all)."""
  global _FOLDER
  _FOLDER = None if folder is None else pathlib.Path(folder)


# The rooms whose code is traced into a stored program: the models, the
# steps and optimisers, the batches and masks drawn on device, the special
# ids. An edit elsewhere (a command, a view) keeps the stored programs.
TRACED = ("models", "training", "data", "special_tokens.py")


@functools.cache
def source_digest() -> str:
  """SHA-256 over the source of the lm_jax modules a program traces."""
  root = pathlib.Path(__file__).resolve().parents[1]
  digest = hashlib.sha256()
  paths = [p for name in TRACED for p in ([root / name] if name.endswith(
      ".py") else (root / name).rglob("*.py"))]
  for path in sorted(paths):
    digest.update(str(path.relative_to(root)).encode() + b"\0")
    digest.update(path.read_bytes() + b"\0")
  return digest.hexdigest()


def _environment() -> dict:
  import flax
  import jaxlib
  import optax
  devices = jax.devices()
  return dict(
      source=source_digest(), jax=jax.__version__, jaxlib=jaxlib.__version__,
      flax=flax.__version__, optax=optax.__version__,
      backend=jax.default_backend(), devices=[d.device_kind for d in devices],
      processes=jax.process_count(), xla_flags=os.environ.get("XLA_FLAGS", ""),
      # Options with a context manager are attributes the stubs do not list.
      x64=getattr(jax.config, "jax_enable_x64"),
      precision=str(getattr(jax.config, "jax_default_matmul_precision")))


def _describe_args(args) -> list:
  """Each leaf's path, shape, dtype, weak type and sharding."""
  described = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
    described.append([
        jax.tree_util.keystr(path), str(getattr(leaf, "shape", None)),
        str(getattr(leaf, "dtype", type(leaf).__name__)),
        bool(getattr(leaf, "weak_type", False)),
        str(getattr(leaf, "sharding", None))])
  return described


def _devices(args) -> list:
  """The devices a program of `args` runs on, in its order: those of the
  argument spread over the most (a mesh's, or one device)."""
  found: list = []
  for leaf in jax.tree.leaves(args):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
      devices = list(sharding.mesh.devices.flat)
    elif sharding is not None:
      devices = sorted(sharding.device_set, key=lambda d: d.id)
    else:
      continue
    if len(devices) > len(found):
      found = devices
  return found or jax.devices()[:1]


def program_key(name: str, settings: dict, args: tuple, static: dict
                ) -> str | None:
  """The file name of a program: a digest of all it depends on; None where
  that holds an object's address (a function's repr), which differs from
  one process to the next: such a program is not stored."""
  described = dict(name=name, settings=settings, args=_describe_args(args),
                   static={k: repr(v) for k, v in sorted(static.items())},
                   environment=_environment())
  text = json.dumps(described, sort_keys=True, default=repr)
  if re.search(r" at 0x[0-9a-f]+", text):
    return None
  return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:40]}.bin"


def compiled(name: str, jitted, args: tuple, static: dict, settings: dict,
             describe_out: Callable[[Any], Any] = lambda tree: tree,
             rebuild_out: Callable[[Any], Any] = lambda tree: tree):
  """`jitted` compiled for `args` (positional, dynamic) and `static`
  (keyword): read from the folder when it holds the program, else traced,
  compiled and stored there. Call the result with `args` alone.

  `settings`: the run's settings the program was built from (JSON-able).
  `describe_out(out_tree)` is what is stored of the output structure (it
  must pickle; the default, the structure itself, does for plain
  containers); `rebuild_out(description)` makes the structure again.
  """
  from jax.experimental import serialize_executable
  # One process of a job of several: not stored (not tested across hosts).
  key = None if _FOLDER is None or jax.process_count() > 1 else program_key(
      name, settings, args, static)
  path = None if key is None or _FOLDER is None else _FOLDER / key
  if path is not None and path.is_file():
    try:
      blob, description = pickle.loads(path.read_bytes())
      return serialize_executable.deserialize_and_load(
          blob, jax.tree.structure((args, {})), rebuild_out(description),
          execution_devices=_devices(args))
    except Exception:  # noqa: BLE001 -- any unreadable entry is a miss
      pass
  lowered = jitted.trace(*args, **static).lower()
  if path is None or _calls_out(lowered):
    return lowered.compile()
  try:
    with _fresh_compile():
      program = lowered.compile()
  except _NoFreshCompile:  # another JAX: compiled as usual, not stored
    return lowered.compile()
  _store(path, program, describe_out, rebuild_out)
  return program


# Custom calls the partitioner consumes before code is generated; any other
# (LAPACK's QR in an orthogonal init, say) is a function JAX registers with
# XLA while lowering, which a process that skips lowering lacks: loading such
# a program crashes, so it is not stored.
_PARTITIONER_CALLS = {"Sharding", "SPMDFullToShardShape",
                      "SPMDShardToFullShape"}


def _calls_out(lowered) -> bool:
  """Whether the program calls a function outside XLA (a custom call)."""
  targets = set(re.findall(r"custom_call @(\w+)", lowered.as_text()))
  return bool(targets - _PARTITIONER_CALLS)


class _NoFreshCompile(Exception):
  pass


@contextlib.contextmanager
def _fresh_compile():
  """JAX's persistent cache passed over for one compile.

  An executable XLA:CPU read from that cache does not serialize whole:
  another process that loads the bytes fails at its first call with
  "Function ... not found", so a program stored here must be compiled
  afresh (seconds, once per key). JAX has no public switch for one
  compile (its flag is read once per process), so this sets the private
  state jax 0.10 keeps it in; where that is missing, nothing is stored.
  """
  try:
    from jax._src import compilation_cache as cc
    cc.is_cache_used(jax.devices()[0].client)  # decided now, not later
    lock, used = cc._cache_initialized_mutex, cc._cache_used
  except (ImportError, AttributeError) as e:
    raise _NoFreshCompile from e
  with lock:
    cc._cache_used = False
  try:
    yield
  finally:
    with lock:
      cc._cache_used = used


def _store(path: pathlib.Path, program, describe_out, rebuild_out) -> None:
  """Writes `program` to `path` if its output structure can be rebuilt."""
  from jax.experimental import serialize_executable
  try:
    blob, _, out_tree = serialize_executable.serialize(program)
    description = describe_out(out_tree)
    if rebuild_out(description) != out_tree:
      return
    data = pickle.dumps((blob, description))
    outputs.write_replacing(path, lambda tmp: tmp.write_bytes(data))
  except Exception:  # noqa: BLE001 -- not stored: the next start traces
    pass
