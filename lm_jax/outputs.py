"""Files the commands write (an exported model, a plot): where they may go,
and writing them whole.

A target is checked before any work: an empty name, a directory, a device
or any other non-regular path, a missing or unwritable folder, and (unless
the command may replace it) an existing file are refused in one line. The
file is then written beside the target under a temporary name and renamed
over it, so a failed or killed write leaves the old file or none.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
from typing import Callable

from lm_jax.errors import UserError


def cache_dir(kind: str) -> pathlib.Path:
  """The user's cache folder for `kind` ("xla", "corpus"):
  $XDG_CACHE_HOME/lm_jax/KIND, else ~/.cache/lm_jax/KIND (not made here)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "lm_jax" / kind


def check_target(path: str | os.PathLike, flag: str = "--out",
                 replace: bool = True, suffixes: tuple[str, ...] = (),
                 make_folder: bool = False) -> pathlib.Path:
  """The path to write, or UserError naming why it cannot be written.

  `replace`: an existing regular file may be replaced (else refused, with
  `--force` as the fix). `suffixes`: the file types the writer knows
  (".png", ...); empty: any. `make_folder`: a missing folder is created
  when the file is written, instead of being refused.
  """
  text = os.fspath(path)
  if not text.strip():
    raise UserError(f"{flag} is empty: name the file to write, e.g. "
                    f"{flag}=out{suffixes[0] if suffixes else ''}")
  path = pathlib.Path(text)
  if path.is_dir():
    example = path / ("out" + (suffixes[0] if suffixes else ""))
    raise UserError(f"{flag}={text} is a directory; name a file in it, e.g. "
                    f"{flag}={example}")
  if os.path.lexists(path):
    if path.is_symlink() or not path.is_file():
      raise UserError(f"{flag}={text} is not a regular file (a device, pipe, "
                      "socket or link); name a new file")
    if not replace:
      raise UserError(f"{flag}={text} exists; pass --force to replace it, or "
                      "name a new file")
  if suffixes and path.suffix.lower() not in suffixes:
    kinds = (f"{', '.join(suffixes[:3])} (or {suffixes[3]}, ...)"
             if len(suffixes) > 3 else " or ".join(suffixes))
    raise UserError(f"{flag}={text}: cannot write a "
                    f"{path.suffix or 'suffix-less'} file; name a {kinds} "
                    "file")
  folder = existing_folder(path.parent)
  if folder != path.parent.absolute() and not make_folder:
    raise UserError(f"{flag}={text}: the folder {path.parent} does not exist;"
                    " create it or name a file in an existing folder")
  if not folder.is_dir():
    raise UserError(f"{flag}={text}: {folder} is not a folder; name a file "
                    "in an existing folder")
  if not os.access(folder, os.W_OK | os.X_OK):
    raise UserError(f"{flag}={text}: cannot write in {folder} (permission "
                    f"denied); name a file in a writable folder, e.g. "
                    f"{flag}=/tmp/{path.name}")
  return path


def existing_folder(folder: pathlib.Path) -> pathlib.Path:
  """`folder` (absolute), or its nearest ancestor that exists."""
  folder = folder.absolute()
  while not os.path.lexists(folder) and folder != folder.parent:
    folder = folder.parent
  return folder


def write_replacing(path: pathlib.Path,
                    write: Callable[[pathlib.Path], object],
                    flag: str = "--out",
                    errors: tuple[type[Exception], ...] = ()) -> pathlib.Path:
  """write(tmp) beside `path`, then a rename over it; an OSError (a full
  disk, a read-only folder), or one of the writer's `errors`, is a
  UserError and leaves no temporary file."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"{flag}={path}: cannot create the folder {path.parent} "
                    f"({e.strerror}); name a file in a writable folder"
                    ) from None
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  umask = os.umask(0)
  os.umask(umask)
  caught: tuple[type[Exception], ...] = (OSError, *errors)
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~umask)  # as a plain open() makes it
    os.replace(tmp, path)
  except caught as e:
    with contextlib.suppress(OSError):
      tmp.unlink()
    raise UserError(f"cannot write {path} ({_reason(e)}); pass {flag}= a "
                    "file in a writable folder with space left") from None
  return path




def _reason(e: Exception) -> str:
  """An error's cause in a few words: "Permission denied"."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  found = re.search(r"I/O error: (.*?) \(os error", text)  # safetensors
  return found.group(1) if found else text
