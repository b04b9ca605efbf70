"""The members of a sweep: `--set=KEY=V1,V2` lists, their grid (or zip),
each member's config, and the groups that share one program.

A KEY is a config path as the overrides write it (`train.learning_rate`,
`model.num_layers`, `seed`), or `config`: a shipped config by name
(`char_lstm:smoke`), whose values start each member from that config.
`--config.KEY=V` overrides (`overrides`) apply to every member, whatever
its base config: after the member's config is loaded, before its `--set`
values. Every check here runs before anything is written or compiled.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import pathlib
import re
from typing import Callable

import ml_collections

from lm_jax import config as config_lib
from lm_jax.errors import UserError
from lm_jax.runs import rundir
from lm_jax.sweep import hyper

CONFIG_KEY = "config"  # a --set key choosing the base config of each member
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclasses.dataclass
class Member:
  """One setting of the grid: its swept values, config and run directory."""
  values: dict  # key -> value, in --set order
  texts: dict  # key -> the value as typed
  config: ml_collections.ConfigDict
  workdir: pathlib.Path

  @property
  def name(self) -> str:
    return self.workdir.name


def parse_set(arg: str) -> tuple[str, list[str]]:
  """'train.learning_rate=1e-3,3e-3' -> ('train.learning_rate', ['1e-3', ...])."""
  key, eq, rest = arg.partition("=")
  key = key.strip()
  if not eq or not key:
    raise UserError(f"--set={arg}: write --set=KEY=V1,V2,... (e.g. "
                    "--set=train.learning_rate=3e-4,1e-3)")
  values = [v.strip() for v in rest.split(",")]
  if not rest.strip() or any(not v for v in values):
    raise UserError(f"--set={arg}: an empty value; give at least one value, "
                    "separated by commas")
  if len(set(values)) < len(values):
    raise UserError(f"--set={arg}: a value given twice; list each once")
  return key, values


def parse_sets(args: list[str]) -> list[tuple[str, list[str]]]:
  """Every --set, checked: at least one, no key twice."""
  if not args:
    raise UserError("nothing to sweep: give --set=KEY=V1,V2,... (e.g. "
                    "--set=train.learning_rate=3e-4,1e-3,3e-3)")
  sets = [parse_set(a) for a in args]
  keys = [k for k, _ in sets]
  for k in keys:
    if keys.count(k) > 1:
      raise UserError(f"--set={k}=... is given twice; put all its values in "
                      "one --set, separated by commas")
  return sets


def load_named_config(name: str) -> ml_collections.ConfigDict:
  """A shipped config by name (`char_tf:smoke`) or a config file path; a
  file that is no config (not Python, no get_config, one that raises) is
  a UserError of one line."""
  fix = "name a shipped config or a file with get_config(), e.g. char_tf:smoke"
  path, _, variant = config_lib.resolve_config(name).partition(":")
  if not pathlib.Path(path).is_file():
    raise UserError(f"--set=config={name}: no such config; use one of "
                    f"{', '.join(config_lib.shipped_configs())}")
  spec = importlib.util.spec_from_file_location(
      f"_sweep_config_{pathlib.Path(path).stem}", path)
  if spec is None or spec.loader is None:
    raise UserError(f"--set=config={name}: {path} cannot be loaded as "
                    f"Python; {fix}")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f"--set=config={name}: {path} is not valid Python "
                    f"(line {e.lineno}: {e.msg}); {fix}") from None
  except Exception as e:  # noqa: BLE001 (the learner's file: any error)
    raise UserError(f"--set=config={name}: {path} failed to load "
                    f"({type(e).__name__}: {e}); {fix}") from None
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"--set=config={name}: {path} has no get_config(); "
                    f"{fix}")
  try:
    config = module.get_config(variant)
  except ValueError as e:
    raise UserError(f"--set=config={name}: {e}") from None
  except Exception as e:  # noqa: BLE001
    raise UserError(f"--set=config={name}: get_config({variant!r}) raised "
                    f"{type(e).__name__}: {e}; {fix}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"--set=config={name}: get_config() returned a "
                    f"{type(config).__name__}, not a ConfigDict; {fix}")
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict,
                    member: str) -> None:
  """`overrides` (`--config.KEY=V`: key -> value, typed by the base
  config) set in a member's `config`; a key it lacks is one line naming
  the member."""
  for key, value in overrides.items():
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise UserError(
            f"member {member}: --config.{key} does not apply, its config "
            f"has no key {key}; drop the override or sweep configs that "
            "have it")
      node = node[part]
    try:
      config.update_from_flattened_dict({key: value})
    except (TypeError, ValueError) as e:
      raise UserError(f"member {member}: --config.{key}={value!r}: "
                      f"{e}") from None


def typed(config: ml_collections.ConfigDict, key: str, text: str):
  """`text` as the type of the config's `key`; UserError naming the key."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(["config", *parts[:i]])
      raise UserError(f"--set={key}: unknown config key (no {part!r} in "
                      f"{where}); lm-jax-train --show_config lists the keys")
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise UserError(f"--set={key}: a group of settings, not one; name a key "
                    f"inside it, e.g. {key}.{next(iter(node))}")
  try:
    if isinstance(node, bool):
      low = text.lower()
      if low not in _TRUE + _FALSE:
        raise ValueError
      return low in _TRUE
    if isinstance(node, int):
      return int(text)
    if isinstance(node, float):
      return float(text)
    if isinstance(node, str):
      return text
  except ValueError:
    what = {bool: "True or False", int: "an integer", float: "a number"}[
        type(node)]
    raise UserError(f"--set={key}: {text!r} is not {what} (the key holds "
                    f"{node!r})") from None
  raise UserError(f"--set={key}: a {type(node).__name__} setting cannot be "
                  "swept; sweep numbers, flags or names")


def short_names(keys: list[str]) -> dict[str, str]:
  """Each key's last part, or its whole path where two share a last part."""
  last = [k.rpartition(".")[2] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def member_dirname(texts: dict, names: dict) -> str:
  safe = lambda s: re.sub(r"[^\w.+-]", "-", s)
  return "_".join(f"{names[k]}={safe(v)}" for k, v in texts.items())


def make_members(base: Callable[[], ml_collections.ConfigDict],
                 sets: list[tuple[str, list[str]]], zipped: bool,
                 workdir: pathlib.Path,
                 overrides: dict | None = None) -> list[Member]:
  """Every member: the grid of the lists (or their zip), each a validated
  config (`base()` a fresh copy of the base config, its `overrides`
  applied; a member of another base config gets them applied too)."""
  keys = [k for k, _ in sets]
  lists = [v for _, v in sets]
  if zipped:
    if len({len(v) for v in lists}) > 1:
      raise UserError("--zip pairs the lists value by value: give every "
                      "--set the same number of values (got "
                      f"{', '.join(f'{k}: {len(v)}' for k, v in sets)})")
    combos = list(zip(*lists))
  else:
    combos = list(itertools.product(*lists))
  names = short_names(keys)
  # Named by the keys that vary (a single value is a shared override).
  named = [k for k, v in sets if len(v) > 1] or keys
  members = []
  for combo in combos:
    texts = dict(zip(keys, combo))
    name = member_dirname({k: texts[k] for k in named}, names)
    if CONFIG_KEY in texts:
      config = load_named_config(texts[CONFIG_KEY])
      apply_overrides(config, overrides or {}, name)
    else:
      config = base()
    values = {}
    for key, text in texts.items():
      if key == CONFIG_KEY:
        values[key] = text
        continue
      values[key] = typed(config, key, text)
      config.update_from_flattened_dict({key: values[key]})
    try:
      config_lib.validate(config)
    except UserError as e:
      raise UserError(f"member {name}: {e}") from None
    members.append(Member(values, texts, config, workdir / name))
  return members


def program_key(config: ml_collections.ConfigDict) -> str:
  """What members of one population must share: every setting but the
  member settings (`hyper.MEMBER_SETTINGS`)."""
  flat = rundir.flatten(json.loads(config.to_json()))
  return json.dumps({k: v for k, v in flat.items()
                     if k not in hyper.MEMBER_SETTINGS}, sort_keys=True)


def make_groups(members: list[Member]) -> list[list[Member]]:
  """Members sharing one program, in the order they first appear."""
  groups: dict[str, list[Member]] = {}
  for m in members:
    groups.setdefault(program_key(m.config), []).append(m)
  return list(groups.values())


def differing(members: list[Member]) -> list[str]:
  """The swept keys whose values differ among `members`."""
  keys = list(members[0].values)
  return [k for k in keys if len({repr(m.values[k]) for m in members}) > 1]
