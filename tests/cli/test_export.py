"""lm-jax-export (lm_jax/cli/export.py): one file for a trained run, written
only where a regular file may be replaced."""

import os
import shutil
import stat

import pytest

from conftest import REPO, refused, run_command
from lm_jax.runs import modelfile


def _export(smoke_run, out, *flags, cwd=REPO):
  return run_command("lm_jax.cli.export", f"--workdir={smoke_run}",
                     f"--out={out}",
              *flags, cwd=cwd)


def test_export_refuses_a_file_inside_a_run_directory(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  before = (run / "config.json").read_bytes()
  refused(_export(run, run / "config.json", "--force"),
           "is inside the run directory")
  refused(_export(run, run / "checkpoints" / "m.safetensors"),
           "is inside the run directory")
  assert (run / "config.json").read_bytes() == before


def test_export_replaces_an_existing_file_only_with_force(smoke_run,
                                                          tmp_path):
  out = tmp_path / "m.safetensors"
  out.write_text("keep me")
  refused(_export(smoke_run, out), "exists; pass --force")
  assert out.read_text() == "keep me"
  done = _export(smoke_run, out, "--force")
  assert done.returncode == 0, done.stderr
  assert modelfile.load_model(out).step == 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize("out, message", [
    ("/dev/null", "is not a regular file"),
    ("DIR", "is a directory"),
    ("DIR/missing/m.safetensors", "does not exist"),
    ("", "--out is empty"),
])
def test_export_refuses_targets_it_cannot_write(smoke_run, tmp_path, out,
                                                message):
  out = out.replace("DIR", str(tmp_path))
  refused(_export(smoke_run, out, "--force"), message)
  assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
  assert list(tmp_path.iterdir()) == []


def test_export_write_failures_are_one_line(smoke_run, tmp_path):
  # /sys refuses new files even to root; a read-only current directory
  # with the default --out is the same failure.
  refused(_export(smoke_run, "/sys/m.safetensors"), "/sys")
  refused(run_command("lm_jax.cli.export", f"--workdir={smoke_run}",
                       cwd="/sys"),
           "model.safetensors")
