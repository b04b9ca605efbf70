"""Shared test helpers: tiny configs and a tiny text corpus."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

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
os.environ.update(JAX_COMPILATION_CACHE_DIR=os.environ["LM_JAX_TEST_XLA_CACHE"],
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def pytest_sessionfinish(session):
  if OWNS_XLA_CACHE:
    shutil.rmtree(os.environ["LM_JAX_TEST_XLA_CACHE"], ignore_errors=True)


from configs import char_tf

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """A char_tf smoke run trained for 4 steps on `corpus_text()`, shared by
  the tests that only read it."""
  from lm_jax import trainer
  config = char_tf.get_config("smoke")
  text = tmp_path_factory.mktemp("text") / "corpus.txt"
  text.write_text(corpus_text(), encoding="utf-8")
  config.data.path = str(text)
  config.train.update(num_steps=4, eval_every=4, sample_tokens=0)
  workdir = tmp_path_factory.mktemp("run")
  trainer.train_and_evaluate(config, workdir)
  return workdir


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


def run_module(*args: str) -> subprocess.CompletedProcess:
  """`python -m ARGS` from the repository root, output captured as text."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
