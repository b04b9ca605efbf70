"""Shared test helpers: tiny configs and a tiny text corpus."""

import pathlib
import subprocess
import sys

import pytest

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
