"""lm_jax/cli/process.py: what every command sets up (the compilation cache,
CPU devices), errors as exit statuses, and the console script's exit."""

import signal
import sys

import pytest

from lm_jax.cli import process
from lm_jax.errors import UserError


def test_entry_points_keep_compiled_programs(monkeypatch, tmp_path):
  """The commands cache XLA's programs under the user's cache folder,
  unless JAX_COMPILATION_CACHE_DIR chooses (empty: no cache)."""
  import jax

  before = jax.config.jax_compilation_cache_dir
  try:
    assert process.use_compilation_cache() is None  # the tests' own cache
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert process.use_compilation_cache() == str(tmp_path / "lm_jax" / "xla")
    assert jax.config.jax_compilation_cache_dir == str(
        tmp_path / "lm_jax" / "xla")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_cpu_device_count_divides_the_batch(monkeypatch):
  monkeypatch.setattr(process.os, "cpu_count", lambda: 8)
  assert process.cpu_device_count(0, 32) == 8  # one per core
  assert process.cpu_device_count(0, 12) == 4  # as many as divide the batch
  assert process.cpu_device_count(0, 7) == 1
  assert process.cpu_device_count(2, 32) == 2  # asked for
  assert process.cpu_device_count(3, 32) == 1
  monkeypatch.setattr(process.os, "cpu_count", lambda: None)
  assert process.cpu_device_count(0, 32) == 1


def test_unwritable_names_the_problem(tmp_path):
  assert process.unwritable(str(tmp_path / "new")) is None
  assert (tmp_path / "new").is_dir()
  (tmp_path / "file").write_text("")
  assert process.unwritable(str(tmp_path / "file" / "below")) == \
      "Not a directory"


def _fails(error: BaseException):
  def main():
    raise error
  return main


def test_run_main_turns_errors_into_exit_statuses(capsys):
  assert process.run_main(lambda: None) == 0
  assert process.run_main(lambda code: code, 3) == 3
  assert process.run_main(_fails(UserError("bad --x; pass --x=1"))) == 2
  assert capsys.readouterr().err == "error: bad --x; pass --x=1\n"
  assert process.run_main(_fails(KeyboardInterrupt())) == 130
  assert capsys.readouterr().err == "interrupted\n"


def test_once_a_command_ends_a_second_ctrl_c_ends_it_at_once(monkeypatch):
  # The training loop's handler is restored when it stops (a notebook
  # keeps its KeyboardInterrupt); the command then exits, and a Ctrl-C
  # during the interpreter's teardown takes the default action: no
  # traceback.
  monkeypatch.setattr(sys, "argv", ["lm-jax-test", "--x=1"])
  seen = []
  before = signal.getsignal(signal.SIGINT)
  try:
    with pytest.raises(SystemExit) as exited:
      process.run_cli(lambda argv: seen.append(argv) or 130)
    assert exited.value.code == 130 and seen == [["--x=1"]]
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
  finally:
    signal.signal(signal.SIGINT, before)
