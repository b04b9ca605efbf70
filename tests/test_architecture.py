"""The import rule of docs/ARCHITECTURE.md: each room of the package imports
only rooms below it, and no module shadows the standard library."""

import ast
import pathlib
import sys

from conftest import REPO

PACKAGE = REPO / "lm_jax"
# Bottom to top; a module may import its own room and any room before it.
ROOMS = ["errors", "special_tokens", "outputs", "data", "models", "training", "runs",
         "generation", "views", "config", "tasks", "loop", "sweep", "serve", "evaluation",
         "cli",
         "train", "sample"]
# Rooms that share a level (neither imports the other), and outputs.py,
# which imports only errors.py.
LEVEL = {"errors": 0, "special_tokens": 0, "outputs": 1}
# Imports the levels allow but the design does not: a model never sees a
# tokenizer (the special ids it needs sit below both).
FORBIDDEN = {("models", "data")}


def room(module: str) -> str:
  """`lm_jax.runs.rundir` -> "runs"; `lm_jax.errors` -> "errors"."""
  return module.split(".")[1]


def module_name(path: pathlib.Path) -> str:
  """lm_jax/views/plotting.py -> `lm_jax.views.plotting`."""
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
  path = REPO.joinpath(*name.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: pathlib.Path, module: str | None = None,
            annotations: bool = True) -> set[str]:
  """The lm_jax modules `path` (the module `module`, by default the one at
  that path) imports, at any depth of its code, relative imports resolved;
  `from lm_jax.views import plotting` names the module
  `lm_jax.views.plotting`, not the folder. `annotations` False leaves out
  the imports under `if TYPE_CHECKING:`, which name types and load nothing."""
  found = set()
  package = (module or module_name(path)).split(".")
  if path.name != "__init__.py":
    package = package[:-1]
  tree = ast.parse(path.read_text(encoding="utf-8"))
  typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", None) == "TYPE_CHECKING"
                 for stmt in block.body for n in ast.walk(stmt)}
  for node in ast.walk(tree):
    if not annotations and id(node) in typing_only:
      continue
    if isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # `from . import x`, `from ..data import y`
        base = ".".join(package[:len(package) - node.level + 1]
                        + ([base] if base else []))
      if base != "lm_jax" and not base.startswith("lm_jax."):
        continue
      for alias in node.names:
        name = f"{base}.{alias.name}"
        found.add(name if is_module(name) else base)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("lm_jax."))
  found.discard("lm_jax")
  return found


def level(name: str) -> int:
  return LEVEL.get(name, ROOMS.index(name))


def test_every_module_is_in_a_room():
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
      continue
    assert parts[0] in ROOMS, f"{path}: add its room to ARCHITECTURE.md"


def modules():
  """Every module of the package but its lazy `__init__` (the notebook
  API names its modules as strings), with its path."""
  for path in sorted(PACKAGE.rglob("*.py")):
    if path != PACKAGE / "__init__.py":
      yield module_name(path), path


def test_rooms_import_only_rooms_below():
  broken = []
  for name, path in modules():
    mine = room(name)
    for module in imports(path):
      other = room(module)
      if (other != mine and level(other) >= level(mine)) or (
          (mine, other) in FORBIDDEN):
        broken.append(f"{path.relative_to(REPO)} ({mine}) imports {module}")
  assert not broken, "\n".join(broken)


def test_no_import_cycle_inside_a_room():
  """Function-level imports count too: a cycle hidden in a function is
  still two modules that cannot be read one before the other. A module
  may name a type of another for annotations alone (`TYPE_CHECKING`)."""
  graph = {name: {m for m in imports(path, annotations=False)
                  if room(m) == room(name)
                  and m != name and not m.endswith("__init__")}
           for name, path in modules()}
  graph = {k: {m for m in v if m in graph} for k, v in graph.items()}
  done: set[str] = set()

  def visit(node: str, trail: list[str]) -> None:
    if node in trail:
      raise AssertionError("import cycle: " + " -> ".join(
          trail[trail.index(node):] + [node]))
    if node not in done:
      for nxt in sorted(graph[node]):
        visit(nxt, trail + [node])
      done.add(node)

  for node in sorted(graph):
    visit(node, [])


def test_the_checks_see_relative_imports_and_folders(tmp_path):
  """`imports` resolves relative imports and names modules, not folders."""
  source = tmp_path / "probe.py"
  source.write_text("from . import plotting\nfrom ..models import base\n"
                    "def late():\n  from .labels import tick_labels\n"
                    "from lm_jax.data import tokenizers\n")
  assert imports(source, "lm_jax.views.probe") == {
      "lm_jax.views.plotting", "lm_jax.models.base", "lm_jax.views.labels",
      "lm_jax.data.tokenizers"}


def test_no_module_shadows_the_standard_library():
  names = {p.stem for p in PACKAGE.rglob("*.py")} | {
      p.name for p in PACKAGE.rglob("*") if p.is_dir()}
  assert not names & sys.stdlib_module_names


def mirror(path: pathlib.Path) -> pathlib.Path:
  """The test file of a module: lm_jax/ROOM/M.py -> tests/ROOM/test_M.py."""
  relative = path.relative_to(PACKAGE)
  return REPO / "tests" / relative.parent / f"test_{relative.name}"


def test_every_module_has_its_test_file_in_the_mirror():
  sources = [p for p in sorted(PACKAGE.rglob("*.py"))
             if p.name != "__init__.py"]
  missing = {str(p.relative_to(PACKAGE).with_suffix("")) for p in sources
             if not mirror(p).exists()}
  assert not missing, sorted(missing)
