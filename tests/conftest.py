"""Shared test helpers: tiny configs and a tiny text corpus."""

import contextlib
import importlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest

# One XLA compilation cache (`jax_compilation_cache_dir`) for the test
# session, its xdist workers and the commands they start. Each training
# builds a fresh optimiser, so `jax.jit` traces a test's second training
# anew (a resume, a CLI run of a config trained in-process); its program is
# the same and XLA's compile (most of a tiny run) then comes from disk. The
# first process to load this file (pytest, or xdist's controller) makes the
# folder, empty, and removes it at the end; the workers inherit it.
OWNS_XLA_CACHE = "LM_JAX_TEST_XLA_CACHE" not in os.environ
if OWNS_XLA_CACHE:
  os.environ["LM_JAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="lm_jax_xla_")
# lm_jax's store of whole train steps (lm_jax/training/programs.py) compiles
# each new program afresh: off, but in the tests of it.
# The token cache (lm_jax/data/token_cache.py) in the same session folder,
# never the user's.
os.environ.setdefault("LM_JAX_CACHE", os.path.join(
    os.environ["LM_JAX_TEST_XLA_CACHE"], "tokens"))
os.environ.update(JAX_COMPILATION_CACHE_DIR=os.environ["LM_JAX_TEST_XLA_CACHE"],
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                  LM_JAX_PROGRAM_CACHE="0")


def pytest_sessionfinish(session):
  if OWNS_XLA_CACHE:
    shutil.rmtree(os.environ["LM_JAX_TEST_XLA_CACHE"], ignore_errors=True)


from configs import char_tf

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


# Trains a config's smoke variant with overrides in a fresh process that sees
# 8 CPU devices; prints the device count and the last evaluation as JSON.
EIGHT_DEVICE_CHILD = """
import importlib, json, sys
import jax
from lm_jax.loop import trainer
config = importlib.import_module("configs." + sys.argv[1]).get_config("smoke")
config.update_from_flattened_dict(json.loads(sys.argv[2]))
result = trainer.train_and_evaluate(config, sys.argv[3],
                                    stop_at=json.loads(sys.argv[4]))
print(json.dumps({"devices": jax.device_count(), **result}))
"""


def train_on_8_devices(overrides: dict, workdir, config: str = "char_tf",
                       stop_at: int | None = None) -> dict:
  """`configs/<config>.py:smoke` with `overrides` (flattened keys) trained
  in `workdir` on 8 simulated CPU devices; its last evaluation."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run(
      [sys.executable, "-c", EIGHT_DEVICE_CHILD, config, json.dumps(overrides),
       str(workdir), json.dumps(stop_at)], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  return result


@pytest.fixture
def smoke_config():
  """The char_tf smoke config."""
  return char_tf.get_config("smoke")


def corpus_text() -> str:
  """A small corpus with enough text for a few smoke batches."""
  return "".join(f"LINE {i}: the quick brown fox jumps over the lazy dog.\n"
                 for i in range(400))


@pytest.fixture
def text_file(tmp_path):
  """`corpus_text()` in a UTF-8 file."""
  path = tmp_path / "corpus.txt"
  path.write_text(corpus_text(), encoding="utf-8")
  return path


def trained_on_corpus(tmp_path_factory, config, name: str):
  """`config` trained for 4 steps on `corpus_text()`: its run directory."""
  from lm_jax.loop import trainer
  text = tmp_path_factory.mktemp("text") / "corpus.txt"
  text.write_text(corpus_text(), encoding="utf-8")
  config.data.path = str(text)
  config.train.update(num_steps=4, eval_every=4, sample_tokens=0)
  workdir = tmp_path_factory.mktemp(name)
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """A char_tf smoke run, shared by the tests that only read it."""
  return trained_on_corpus(tmp_path_factory, char_tf.get_config("smoke"),
                           "run")


@pytest.fixture(scope="session")
def masked_run(tmp_path_factory):
  """A char_mlm smoke run (a masked LM), shared by the tests that only
  read it."""
  from configs import char_mlm
  return trained_on_corpus(tmp_path_factory, char_mlm.get_config("smoke"),
                           "masked_run")


def png_size(path) -> tuple[int, int]:
  """(width, height) of a PNG file."""
  import matplotlib.image
  height, width = matplotlib.image.imread(path).shape[:2]
  return width, height


def init_with_random_biases(model, seed: int = 5):
  """`model`'s initial parameters with random biases (they start at zero),
  so that every parameter matters and a mix-up of bias entries shows."""
  import jax
  import jax.numpy as jnp
  params = jax.jit(model.init)(jax.random.key(0),
                               jnp.zeros((1, 4), jnp.int32))["params"]
  keys = iter(jax.random.split(jax.random.key(seed),
                               len(jax.tree.leaves(params))))
  return jax.tree.map_with_path(
      lambda path, p: (jax.random.normal(next(keys), p.shape) * 0.5
                       if path[-1].key.endswith("bias") else p), params)


def run_module(*args: str, stdin: str | None = None, cwd=None
               ) -> subprocess.CompletedProcess:
  """`python -m ARGS` (from the repository root unless `cwd`), with
  `stdin` as its input; output captured as text."""
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd or REPO,
                        input=stdin, capture_output=True, text=True,
                        timeout=300)


def run_command(module: str, *args: str, stdin: str | None = None, cwd=None
                ) -> subprocess.CompletedProcess:
  """`python -m MODULE ARGS` run in this process, its `main(argv)`
  (lm_jax/cli/): the exit status and output as `run_module` gives them,
  without starting Python and JAX again. From the repository root unless
  `cwd`, with `stdin` as its input."""
  import jax
  jax.devices()  # started: a command keeps this process's one device
  main = importlib.import_module(
      "lm_jax.cli." + module.rpartition(".")[2]).main
  out, err = io.StringIO(), io.StringIO()
  with contextlib.chdir(cwd or REPO), contextlib.redirect_stdout(out), \
      contextlib.redirect_stderr(err), mock.patch.object(
          sys, "stdin", io.StringIO(stdin or "")):
    code = main(list(args))
  return subprocess.CompletedProcess([module, *args], code, out.getvalue(),
                                     err.getvalue())


def one_line_error(out: subprocess.CompletedProcess, message: str) -> None:
  """The command failed on bad input as it should: exit 2, one line."""
  assert out.returncode == 2, out.stderr
  assert out.stderr == f"error: {message}\n", out.stderr


def refused(out: subprocess.CompletedProcess, *fragments: str) -> str:
  """Exit 2 with one line `error: ...` holding each fragment; the line."""
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def train_flags(text_file, workdir, **train) -> list[str]:
  """The flags of a smoke training; `train` overrides config.train fields."""
  train = {"num_steps": 100_000, "sample_tokens": 0, **train}
  return ["--config=configs/char_tf.py:smoke",
          f"--config.data.path={text_file}", f"--workdir={workdir}",
          *(f"--config.train.{k}={v}" for k, v in train.items())]


def train_args(text_file, workdir, **train) -> list[str]:
  """A smoke training command line (`train_flags`), for a process of its
  own."""
  return [sys.executable, "-m", "lm_jax.train",
          *train_flags(text_file, workdir, **train)]


# Float32 results reached by different summation orders -------------------
#
# Gradient accumulation against one batch, several devices against one, a
# sweep member against a lone run: the same sums added in another order.
# Each order rounds differently, and so does each host (AMD EPYC and Intel
# Xeon split and vectorise XLA's reductions differently), so such results
# agree to their rounding, never bit for bit, and a fixed `atol=1e-6` holds
# on one host and fails on another. Results that must be bit-exact (exact
# resume, the same program run twice, a stored program) are compared with
# `==`, not with these.

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


def rounding_tolerance(desired, terms: int) -> float:
  """The rounding bound of float32 sums of `terms` terms, at `desired`'s
  scale: a recursive sum of n terms is off by at most about n·eps·Σ|x_i|
  (Higham, Accuracy and Stability of Numerical Algorithms, §4.2), and the
  largest magnitude in `desired` stands for the terms' magnitudes."""
  scale = float(np.max(np.abs(np.asarray(desired, np.float64)), initial=0.0))
  return terms * F32_EPS * max(scale, np.finfo(np.float32).tiny)


def assert_reordered_close(actual, desired, terms: int) -> None:
  """Each leaf of two pytrees equal up to the rounding of sums of `terms`
  terms added in different orders (`rounding_tolerance`, per leaf)."""
  import jax
  def check(path, a, b):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=0,
        atol=rounding_tolerance(b, terms), err_msg=jax.tree_util.keystr(path))
  jax.tree.map_with_path(check, actual, desired)


def assert_scaled_close(actual, desired, rel: float) -> None:
  """Two pytrees of parameters equal to `rel` of their scale (the largest
  magnitude of any leaf of `desired`): for parameters several optimiser
  steps past the reordered sums, where no rounding bound holds. Adam
  divides each update by the gradient's size, so rounding in a gradient
  near zero moves that parameter by up to the learning rate, whatever the
  leaf's own size; the whole tree's scale is the yardstick, not the leaf's."""
  import jax
  leaves = [np.asarray(b, np.float64) for b in jax.tree.leaves(desired)]
  atol = rel * max(float(np.max(np.abs(b), initial=0.0)) for b in leaves)
  def check(path, a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=atol, err_msg=jax.tree_util.keystr(path))
  jax.tree.map_with_path(check, actual, desired)
