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
registered while lowering, which a start from the store skips. An entry
that cannot be read or written is passed over. Off unless a command turns
it on (`use_folder`), as it does with JAX's own cache;
LM_JAX_PROGRAM_CACHE=0 keeps it off.

Trust. A stored program is machine code, and JAX reads it back with
pickle (jax.experimental.serialize_executable is the only API that loads a
compiled executable; jax.export stores StableHLO, which must be compiled
again), so no file format makes a stranger's file safe to load: anyone who
could write one would run code as the next user who trains. Each file is
therefore signed (HMAC-SHA256) with a key of the user's own, kept outside
the cache folder ($XDG_CONFIG_HOME/lm_jax/program_key, else
~/.config/lm_jax/program_key, 0600), and nothing of it is unpickled before
its signature checks out. A file also carries the whole text of its key,
which must equal the one it is looked up by (a file for another program is
rebuilt, with a note). The folder is made user-only (0700); one others can
write to, or a key file others can read, turns the store off with a note.

JAX has no public way to save a program's input and output structure with
it (a TrainState's structure holds the model and the optimiser, which do
not pickle): the input structure is taken from the arguments of the call,
and the output structure comes from `describe_out`/`rebuild_out`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import pathlib
import pickle
import re
import secrets
import stat
import sys
from typing import Any, Callable

import jax

from lm_jax import outputs

_FOLDER: pathlib.Path | None = None


def use_folder(folder: str | os.PathLike | None) -> None:
  """Keeps compiled programs in `folder` (None: not at all)."""
  global _FOLDER
  _FOLDER = None if folder is None else pathlib.Path(folder)
  _trusted.cache_clear()
  _signing_key.cache_clear()


_NOTED: set[str] = set()


def _note(text: str) -> None:
  """One line on stderr, once per process."""
  if text not in _NOTED:
    _NOTED.add(text)
    print(f"note: {text}", file=sys.stderr)


def _loose(info: os.stat_result, bits: int) -> bool:
  """Whether a path is another user's or grants `bits` beyond its owner."""
  return info.st_uid != os.getuid() or bool(info.st_mode & bits)


@functools.cache
def _trusted(folder: pathlib.Path) -> bool:
  """Makes `folder` user-only (0700) if missing; False, with a note, where
  others could plant programs in it (another owner, group/other write)."""
  try:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
  except OSError as e:
    _note(f"program store off: cannot make {folder} ({e.strerror}); each "
          "start traces its programs")
    return False
  if not stat.S_ISDIR(info.st_mode) or _loose(info, 0o022):
    _note(f"program store off: {folder} is not a folder of yours that only "
          f"you can write to (mode {stat.filemode(info.st_mode)}); run "
          f"`chmod 700 {folder}` or remove it, so that no one else's "
          "program runs as you")
    return False
  return True


def key_file() -> pathlib.Path:
  """The user's signing key: outside the cache, so that a writer of the
  cache cannot sign what it plants."""
  base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
      os.path.expanduser("~"), ".config")
  return pathlib.Path(base) / "lm_jax" / "program_key"


@functools.cache
def _signing_key() -> bytes | None:
  """The user's key, made (0600) at the first use; None, with a note,
  where it cannot be made or others can read or change it."""
  path = key_file()
  try:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
      pass
    else:
      with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    info = os.lstat(path)
    key = path.read_bytes()
  except OSError as e:
    _note(f"program store off: cannot make or read its key {path} "
          f"({e.strerror}); each start traces its programs")
    return None
  if not stat.S_ISREG(info.st_mode) or _loose(info, 0o077) or len(key) < 32:
    _note(f"program store off: its key {path} is not a file of 32 bytes or "
          "more that only you can read; remove it (a new one is made)")
    return None
  return key


_MAGIC = b"lm_jax program 2\n"


def _sign(key: bytes, body: bytes) -> bytes:
  return hmac.new(key, body, hashlib.sha256).digest()


def _pack(signing: bytes, text: str, payload: bytes) -> bytes:
  """The file: magic, the key's text (one line of JSON), the payload, and
  an HMAC of all that before it."""
  body = _MAGIC + text.encode() + b"\n" + payload
  return body + _sign(signing, body)


def _unpack(signing: bytes, data: bytes, text: str, path) -> bytes | None:
  """The payload of a file signed with `signing` for `text`; None
  (with a note where the file is not for this key or not signed)."""
  body, mac = data[:-32], data[-32:]
  if not body.startswith(_MAGIC):
    return None  # an older format or a torn file: rebuilt silently
  if not hmac.compare_digest(_sign(signing, body), mac):
    _note(f"stored program {path} is not signed with your key; not loaded "
          "(it is compiled again and replaced)")
    return None
  stored_key, _, payload = body[len(_MAGIC):].partition(b"\n")
  if stored_key != text.encode():
    _note(f"stored program {path} was built for another program than its "
          "name says; not loaded (it is compiled again and replaced)")
    return None
  return payload


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


# JAX options that say where and how JAX reports, caches or waits, never
# what a program computes: left out of the key, so that they do not miss.
_NOT_PROGRAM = re.compile(
    r"compilation_cache|persistent_cache|log|dump|pprint|traceback|explain"
    r"|source_url|timeout|check_proxy|captured_constants|debug_leaked")


def _jax_options() -> dict:
  """Every JAX option (jax.config) but those that cannot change a program:
  jax_threefry_partitionable, jax_default_matmul_precision, jax_enable_x64
  and the rest, as set by flag, environment or jax.config.update."""
  return {name: repr(value) for name, value in sorted(jax.config.values.items())
          if not _NOT_PROGRAM.search(name)}


def _environment() -> dict:
  import flax
  import jaxlib
  import optax
  devices = jax.devices()
  return dict(
      source=source_digest(), jax=jax.__version__, jaxlib=jaxlib.__version__,
      flax=flax.__version__, optax=optax.__version__,
      backend=jax.default_backend(),
      platform_version=devices[0].client.platform_version,
      devices=[d.device_kind for d in devices],
      processes=jax.process_count(), xla_flags=os.environ.get("XLA_FLAGS", ""),
      libtpu_args=os.environ.get("LIBTPU_INIT_ARGS", ""),
      options=_jax_options())


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


def key_text(name: str, settings: dict, args: tuple, static: dict
             ) -> str | None:
  """All a program depends on, as one line of JSON; None where that holds
  an object's address (a function's repr), which differs from one process
  to the next: such a program is not stored."""
  described = dict(name=name, settings=settings, args=_describe_args(args),
                   static={k: repr(v) for k, v in sorted(static.items())},
                   environment=_environment())
  text = json.dumps(described, sort_keys=True, default=repr)
  return None if re.search(r" at 0x[0-9a-f]+", text) else text


def program_key(name: str, settings: dict, args: tuple, static: dict
                ) -> str | None:
  """The file name of a program: a digest of `key_text`, or None."""
  text = key_text(name, settings, args, static)
  return None if text is None else _file_name(name, text)


def _file_name(name: str, text: str) -> str:
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
  folder, signing, text = _FOLDER, None, None
  # One process of a job of several: not stored (not tested across hosts).
  if folder is not None and jax.process_count() == 1 and _trusted(folder):
    signing = _signing_key()
    text = key_text(name, settings, args, static)
  path = None
  if signing is not None and text is not None and folder is not None:
    path = folder / _file_name(name, text)
  if path is not None and signing is not None and text is not None:
    try:
      payload = _unpack(signing, path.read_bytes(), text, path)
    except OSError:  # missing or unreadable: a miss
      payload = None
    if payload is not None:
      try:
        # Signed by this user for this very key: safe to unpickle.
        blob, description = pickle.loads(payload)
        return serialize_executable.deserialize_and_load(
            blob, jax.tree.structure((args, {})), rebuild_out(description),
            execution_devices=_devices(args))
      except Exception:  # noqa: BLE001 -- any unreadable entry is a miss
        pass
  lowered = jitted.trace(*args, **static).lower()
  if path is None or signing is None or text is None or _calls_out(lowered):
    return lowered.compile()
  try:
    with _fresh_compile():
      program = lowered.compile()
  except _NoFreshCompile:  # another JAX: compiled as usual, not stored
    return lowered.compile()
  _store(path, program, describe_out, rebuild_out, signing, text)
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


def _store(path: pathlib.Path, program, describe_out, rebuild_out,
           signing: bytes, text: str) -> None:
  """Writes `program` to `path`, signed, if its output structure can be
  rebuilt."""
  from jax.experimental import serialize_executable
  try:
    blob, _, out_tree = serialize_executable.serialize(program)
    description = describe_out(out_tree)
    if rebuild_out(description) != out_tree:
      return
    data = _pack(signing, text, pickle.dumps((blob, description)))
    outputs.write_replacing(path, lambda tmp: tmp.write_bytes(data))
  except Exception:  # noqa: BLE001 -- not stored: the next start traces
    pass
