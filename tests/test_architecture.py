"""The import rule of docs/ARCHITECTURE.md: each room of the package imports
only rooms below it, and no module shadows the standard library."""

import ast
import pathlib
import sys

from conftest import REPO

PACKAGE = REPO / "lm_jax"
# Bottom to top; a module may import its own room and any room before it.
ROOMS = ["errors", "special_tokens", "outputs", "data", "models", "training", "runs",
         "generation", "views", "config", "tasks", "loop", "sweep", "serve", "cli",
         "train", "sample"]
# Rooms that share a level (neither imports the other), and outputs.py,
# which imports only errors.py.
LEVEL = {"errors": 0, "special_tokens": 0, "outputs": 1}


def room(module: str) -> str:
  """`lm_jax.runs.rundir` -> "runs"; `lm_jax.errors` -> "errors"."""
  return module.split(".")[1]


def imports(path: pathlib.Path) -> set[str]:
  """The lm_jax modules `path` imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == "lm_jax" or node.module.startswith("lm_jax.")):
      if node.module == "lm_jax":
        found.update(f"lm_jax.{a.name}" for a in node.names)
      else:
        found.add(node.module)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("lm_jax."))
  return found


def level(name: str) -> int:
  return LEVEL.get(name, ROOMS.index(name))


def test_every_module_is_in_a_room():
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
      continue
    assert parts[0] in ROOMS, f"{path}: add its room to ARCHITECTURE.md"


def test_rooms_import_only_rooms_below():
  broken = []
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
      continue  # the package's lazy notebook API names modules as strings
    mine = parts[0]
    for module in imports(path):
      other = room(module)
      if other != mine and level(other) >= level(mine):
        broken.append(f"{path.relative_to(REPO)} ({mine}) imports {module}")
  assert not broken, "\n".join(broken)


def test_no_module_shadows_the_standard_library():
  names = {p.stem for p in PACKAGE.rglob("*.py")} | {
      p.name for p in PACKAGE.rglob("*") if p.is_dir()}
  assert not names & sys.stdlib_module_names
