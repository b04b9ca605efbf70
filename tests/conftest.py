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


@pytest.fixture
def text_file(tmp_path):
  """A small UTF-8 corpus with enough text for a few smoke batches."""
  lines = [f"LINE {i}: the quick brown fox jumps over the lazy dog.\n"
           for i in range(400)]
  path = tmp_path / "corpus.txt"
  path.write_text("".join(lines), encoding="utf-8")
  return path


def run_module(*args: str) -> subprocess.CompletedProcess:
  """`python -m ARGS` from the repository root, output captured as text."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
