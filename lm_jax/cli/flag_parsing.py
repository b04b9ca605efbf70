"""Flag parsing for the commands: shipped configs by name, and a bad flag,
override or config file as one line (exit 2) instead of a traceback."""

from __future__ import annotations

import os
import re
import sys

from lm_jax import config as config_lib
from lm_jax.errors import UserError


# Python's words for a value of the wrong type, and plainer ones.
_TYPE_ERRORS = (
    (re.compile(r"invalid literal for int\(\) with base 10: (.*)"),
     r"expected an integer, got \1"),
    (re.compile(r"could not convert string to float: (.*)"),
     r"expected a number, got \1"),
    (re.compile(r"\('Non-boolean argument to boolean flag', (.*)\)"),
     r"expected True or False, got \1"),
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


def resolve_config_args(argv: list[str]) -> list[str]:
  """argv with each --config=NAME (or --config NAME) resolved to a path."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + config_lib.resolve_config(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = config_lib.resolve_config(out[i + 1])
  return out

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")


def command_help() -> str:
  """The command's docstring and its own flags (lm_jax/cli/*), for --help.

  absl's --help lists the flags of the `__main__` module only, which for
  a console script (`lm-jax-train`) is a wrapper that defines none.
  """
  from absl import flags
  mine = [name for name in flags.FLAGS.flags_by_module_dict()
          if "lm_jax.cli." in name or f"lm_jax{os.sep}cli{os.sep}" in name]
  parts = []
  for name in mine:
    module = sys.modules.get(name) or sys.modules["__main__"]
    if module.__doc__:
      parts.append(module.__doc__.strip() + "\n")
    parts.append("flags:\n" + flags.FLAGS.module_help(name))
  parts.append("--helpfull lists every flag, JAX's and absl's too.")
  return "\n".join(parts)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad flag, override or config file as one line;
  --help prints the command's own flags (`command_help`)."""
  from absl import flags

  if any(a in HELP_FLAGS for a in argv[1:]):
    print(command_help())
    sys.exit(0)
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
  config = holder.value
  try:
    config.get("model")
  except OSError as e:
    raise UserError(flag_error_message(e)) from None
  return config
