"""The package: pins that agree, console scripts that exist, configs by name."""

import ast
import re
import tomllib

import pytest

from conftest import REPO
from lm_jax import config as config_lib
from lm_jax.cli import flag_parsing
from lm_jax.errors import UserError

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(path) -> set[str]:
  """The `name==version` lines of a requirements file, comments dropped."""
  lines = (l.split("#")[0].strip() for l in path.read_text().splitlines())
  return {l for l in lines if l and not l.startswith("-r")}


def normal(requirement: str) -> str:
  return re.sub(r"[-_.]+", "-", requirement.lower())


def test_pyproject_pins_equal_the_requirements_files():
  assert ({normal(p) for p in PYPROJECT["dependencies"]}
          == {normal(p) for p in pins(REPO / "requirements.txt")})
  extras = PYPROJECT["optional-dependencies"]
  assert ({normal(p) for p in extras["test"]}
          == {normal(p) for p in pins(REPO / "requirements-test.txt")})
  assert "torch==2.13.0" in pins(REPO / "experiments" / "requirements.txt")
  assert "torch==2.13.0" in extras["bench"]
  jax = next(p for p in PYPROJECT["dependencies"] if p.startswith("jax=="))
  assert extras["gpu"] == [jax.replace("jax==", "jax[cuda13]==")]


def test_console_scripts_name_existing_functions():
  scripts = PYPROJECT["scripts"]
  assert sorted(scripts) == ["lm-jax-eval", "lm-jax-export", "lm-jax-inspect",
                             "lm-jax-plot",
                             "lm-jax-sample", "lm-jax-serve", "lm-jax-sweep",
                             "lm-jax-train"]
  for target in scripts.values():  # parsed: each module defines its flags
    module, _, function = target.partition(":")
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    assert function in {n.name for n in tree.body
                        if isinstance(n, ast.FunctionDef)}


def test_a_shipped_config_is_found_by_name_and_a_path_is_kept():
  shipped = config_lib.configs_dir()
  path = shipped / "char_tf.py"
  assert config_lib.resolve_config("char_tf:smoke") == f"{path}:smoke"
  assert config_lib.resolve_config("char_lstm") == f"{shipped}/char_lstm.py"
  assert config_lib.resolve_config("configs/x.py:smoke") == "configs/x.py:smoke"
  argv = ["prog", "--config", "char_tf", "--x=1"]
  assert flag_parsing.resolve_config_args(argv) == ["prog", "--config", str(path),
                                               "--x=1"]
  with pytest.raises(UserError, match=r"unknown config 'nope': pass a config "
                     r"file or one of bpe_tf, char_gru, char_lstm, char_mlm, "
                     r"char_tf, echo_lstm, echo_s2s, word_lstm, word_mlm, "
                     r"word_tf"):
    config_lib.resolve_config("nope:smoke")


