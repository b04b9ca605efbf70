"""Flag parsing for the commands: shipped configs by name, and a bad flag,
override or config file as one line (exit 2) instead of a traceback."""

from __future__ import annotations

import re
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

from lm_jax import config as config_lib
from lm_jax.cli import process
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

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort",
              "--helpfull", "-helpfull")


def command_help(fv: flags.FlagValues) -> str:
  """The command's docstring and its flags, for --help."""
  parts = []
  for name, defined in fv.flags_by_module_dict().items():
    if not defined:  # an earlier call's config overrides, since deleted
      continue
    module = sys.modules.get(name) or sys.modules["__main__"]
    if module.__doc__:
      parts.append(module.__doc__.strip() + "\n")
    parts.append("flags:\n" + fv.module_help(name))
  return "\n".join(parts)


# Defines a command's config flag in a FlagValues, given the arguments.
DefineConfig = Callable[[flags.FlagValues, list[str]], object]
PROGRAM = "lm_jax"  # argv[0] for absl, which ignores it
# The flags defined here belong to the command that called (its --help).
flags.disclaim_key_flags()


def config_flag(help_text: str) -> DefineConfig:
  """A command's --config: a shipped config by name or a file (default:
  char_tf), locked, so that an override of an unknown key is an error."""
  def define(fv: flags.FlagValues, argv: list[str]) -> None:
    config_flags.DEFINE_config_file(
        "config", str(config_lib.configs_dir() / "char_tf.py"), help_text,
        flag_values=fv, lock_config=True, sys_argv=argv)
  return define


def _reset(fv: flags.FlagValues, argv: list[str],
           define_config: DefineConfig | None) -> None:
  """Every flag of `fv` back to its default, and the config flag defined
  anew: ml_collections loads the default config when the flag is defined
  and reads the names of its overrides from the arguments."""
  for name in fv:  # (fv.unparse_flags() would log each call)
    fv[name].unparse()
  if define_config:
    for name in [n for n in fv if n == "config" or n.startswith("config.")]:
      delattr(fv, name)
    define_config(fv, [PROGRAM, *argv])


def parse(fv: flags.FlagValues, argv: list[str],
          define_config: DefineConfig | None = None) -> list[str]:
  """`argv` (the arguments after the program's name) parsed into `fv`
  afresh, so that nothing of an earlier call remains; returns the
  arguments that are not flags. A bad flag, override or config file raises
  UserError with one line."""
  try:
    argv = resolve_config_args(argv)
    _reset(fv, argv, define_config)
    return fv([PROGRAM, *argv])[1:]
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError,
          OSError, SyntaxError) as e:
    raise UserError(flag_error_message(e, tuple(argv))) from None


def run(fv: flags.FlagValues, argv: list[str], main: Callable[..., int | None],
        define_config: DefineConfig | None = None,
        positional: bool = False) -> int:
  """A command's `main(argv)`: `argv` parsed into `fv`, then `main()`
  (`main(args)` with the arguments that are not flags, if `positional`)
  under process.run_main. Returns the exit status without exiting: 0; 2
  for a user error, one line on stderr; 130 for Ctrl-C. --help prints the
  command's docstring and flags."""
  if any(a in HELP_FLAGS for a in argv):
    _reset(fv, [], define_config)
    print(command_help(fv))
    return 0
  try:
    rest = parse(fv, argv, define_config)
    if rest and not positional:
      raise UserError(f"unexpected arguments {rest}: flags are written "
                      "--name=value")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return process.run_main(main, *([rest] if positional else []))


def config_value(holder):
  """The config of a `config_flags` flag; a file that failed to load raises
  UserError (ml_collections defers that error to the first use)."""
  config = holder.value
  try:
    config.get("model")
  except OSError as e:
    raise UserError(flag_error_message(e)) from None
  return config


def config_overrides(fv: flags.FlagValues) -> dict:
  """The `--config.KEY=V` overrides given: key (without `config.`) ->
  value, typed as the config holds it."""
  return {name[len("config."):]: fv[name].value for name in fv
          if name.startswith("config.") and fv[name].present}
