"""The README and docs/ cannot go stale: every `path: name` they point at
exists, every path they name exists, and their cheap commands run."""

import ast
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `lm_jax/training/steps.py: train_step, train_steps`, `...: TransformerLM.extend`
REFERENCE = re.compile(r"`((?:lm_jax|configs|experiments)/[\w/]+\.py): "
                       r"([\w.]+(?:, [\w.]+)*)`")
PATH = re.compile(r"`((?:lm_jax|configs|experiments|tests|docs)/[\w/.-]+?)"
                  r"(?::\w+)?`")
LINK = re.compile(r"\]\(([^)#:]+)(?:#[\w-]+)?\)")
LONG = "# long: not run by tests"
# Console scripts -> their modules (pyproject.toml's [project.scripts]).
SCRIPTS = {name: target.partition(":")[0] for name, target in tomllib.loads(
    (REPO / "pyproject.toml").read_text())["project"]["scripts"].items()}


def doc_lines():
  for doc in DOCS:
    for number, line in enumerate(doc.read_text().splitlines(), 1):
      yield doc, number, line


def defined(body: list[ast.stmt], classes: dict) -> set[str]:
  """Names a module or class body defines, with its same-file bases'."""
  names = set()
  for node in body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
      names.add(node.name)
    elif isinstance(node, ast.Assign):
      names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      names.add(node.target.id)
    elif isinstance(node, ast.If):  # e.g. a definition under a version check
      names.update(defined(node.body + node.orelse, classes))
  return names


def resolves(path: pathlib.Path, name: str) -> bool:
  """Whether `name` (`f`, `Class` or `Class.method`) is defined in `path`."""
  module = ast.parse(path.read_text())
  classes = {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}
  first, _, member = name.partition(".")
  if not member:
    return first in defined(module.body, classes)
  seen, todo = set(), [first]
  while todo:  # the class, then its bases defined in the same file
    cls = classes.get(todo.pop())
    if cls is None or cls.name in seen:
      continue
    seen.add(cls.name)
    if member in defined(cls.body, classes):
      return True
    todo += [b.id for b in cls.bases if isinstance(b, ast.Name)]
  return False


def test_every_code_reference_resolves():
  references = [(doc, n, path, name) for doc, n, line in doc_lines()
                for path, names in REFERENCE.findall(line)
                for name in names.split(", ")]
  assert len(references) > 20
  missing = [f"{doc.relative_to(REPO)}:{n}: `{path}: {name}`"
             for doc, n, path, name in references
             if not (REPO / path).is_file() or not resolves(REPO / path, name)]
  assert not missing, "stale references:\n" + "\n".join(missing)


def quoted_snippets(doc: pathlib.Path):
  """(line, code line, files) for each line of a ```python block whose
  paragraph just above points at code: the files it points at."""
  paragraph, inside, files, blank = [], False, [], False
  for number, line in enumerate(doc.read_text().splitlines(), 1):
    if line.startswith("```"):
      if not inside:
        files = [p for text in paragraph for p, _ in REFERENCE.findall(text)]
      inside = not inside and line == "```python"
      paragraph = []
    elif inside and files and line.strip():
      yield number, line, files
    elif not inside and line.strip():
      paragraph = [line] if blank else paragraph + [line]
    blank = not line.strip()


def test_quoted_code_is_in_the_file_it_points_at():
  """Each quoted line (a trailing comment dropped, `...` for what is left
  out) occurs in one line of a file its paragraph points at."""
  stale = []
  for doc in DOCS:
    for n, line, files in quoted_snippets(doc):
      code = re.sub(r"\s+#.*$", "", line).strip()
      pattern = r".*?".join(re.escape(" ".join(part.split()))
                            for part in code.split("..."))
      sources = [" ".join(l.split()) for f in files
                 for l in (REPO / f).read_text().splitlines()]
      if not any(re.search(pattern, s) for s in sources):
        stale.append(f"{doc.relative_to(REPO)}:{n}: {code}")
  assert not stale, "quoted code not found:\n" + "\n".join(stale)


def test_every_named_path_and_link_exists():
  missing = []
  for doc, n, line in doc_lines():
    for path in PATH.findall(line):
      if "<" not in path and "*" not in path and not (REPO / path).exists():
        missing.append(f"{doc.relative_to(REPO)}:{n}: {path}")
    for link in LINK.findall(line):
      if not link.startswith("http") and not (doc.parent / link).exists():
        missing.append(f"{doc.relative_to(REPO)}:{n}: link {link}")
  assert not missing, "missing:\n" + "\n".join(missing)


def fenced_commands(doc: pathlib.Path) -> list[tuple[int, str]]:
  """(line, command) of each ```bash block's commands, continuations joined."""
  commands, inside, pending = [], False, None
  for number, line in enumerate(doc.read_text().splitlines(), 1):
    if line.startswith("```"):
      inside = line == "```bash"
      continue
    if not inside or not line.strip() or line.lstrip().startswith("#"):
      continue
    if pending:
      pending = (pending[0], pending[1] + " " + line.strip())
    else:
      pending = (number, line.strip())
    if pending[1].endswith("\\"):
      pending = (pending[0], pending[1][:-1].rstrip())
    else:
      commands.append(pending)
      pending = None
  return commands


def smoke(command: str, trained: set[str]) -> str:
  """A documented command as the test runs it: this interpreter; the first
  training of each config shrunk to its smoke variant and 4 steps, later
  ones (other settings of a config already trained) only parsed and
  checked (`--show_config`)."""
  command = re.sub(r"\blm-jax-\w+", lambda m: f"python -m {SCRIPTS[m[0]]}",
                   command)
  command = re.sub(r"(?<![\w/.-])python(?= )", sys.executable, command)
  if not re.search(r" lm_jax(\.cli)?\.train\b", command):
    return command
  words = shlex.split(command)
  config = next((w.partition("=")[2] for w in words
                 if w.startswith("--config=")), "char_tf")
  name, _, variant = config.partition(":")
  name = pathlib.Path(name).stem
  workdir = f"runs/{name}" + (f"_{variant}" if variant else "")
  words = [w for w in words if not w.startswith(
      ("--config=", "--config.train.num_steps="))]
  if not any(w.startswith("--workdir=") for w in words):
    words.append(f"--workdir={workdir}")
  at = next(i for i, w in enumerate(words)  # --config before its fields
            if w in ("lm_jax.train", "lm_jax.cli.train")) + 1
  words[at:at] = [f"--config={name}:smoke"]
  if name in trained or "--show_config" in words:
    words.append("--show_config")
  else:
    trained.add(name)
    words += ["--config.train.num_steps=4", "--config.train.eval_every=4",
              "--config.train.sample_tokens=0"]
  return shlex.join(words)


@pytest.mark.slow
def test_the_cheap_commands_of_the_docs_run(tmp_path):
  """Trainings first (the other commands read their run directories)."""
  listed = [(doc, n, c) for doc in DOCS for n, c in fenced_commands(doc)
            if LONG not in c]
  trains = [r for r in listed if re.search(r"lm-jax-train|lm_jax\.train", r[2])]
  others = [r for r in listed if r not in trains]
  trained = set()
  (tmp_path / "my_book.txt").write_text("".join(
      f"LINE {i}: the quick brown fox jumps over the lazy dog.\n"
      for i in range(400)))
  # Each command in a shell, as a reader pastes it: the text is the point.
  env = dict(os.environ, PYTHONPATH=str(REPO))
  for doc, n, command in trains + others:
    command = smoke(command, trained)
    done = subprocess.run(command, shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, executable="/bin/bash")
    assert done.returncode == 0, (
        f"{doc.relative_to(REPO)}:{n}: {command}\n{done.stdout[-2000:]}"
        f"\n{done.stderr[-2000:]}")


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
  """docs/tour.ipynb runs top to bottom in a kernel of this interpreter
  (on the smoke config; its stored outputs are those of the full run)."""
  import nbclient
  import nbformat
  kernel = tmp_path / "kernels" / "lm_jax_test"
  kernel.mkdir(parents=True)
  (kernel / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "lm_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
  monkeypatch.setenv("LM_JAX_TOUR_SMOKE", "1")  # the smoke config: seconds
  nb = nbformat.read(REPO / "docs" / "tour.ipynb", as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name="lm_jax_test", timeout=300,  # per cell; CPU is shared
      resources={"metadata": {"path": str(REPO / "docs")}})
  client.execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code"
             for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs)
