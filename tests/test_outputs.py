"""lm_jax/outputs.py: a file a command writes is checked before any work and
written whole."""

import os

import pytest

from lm_jax import outputs
from lm_jax.errors import UserError


def test_the_cache_folder_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert outputs.cache_dir("xla") == tmp_path / "lm_jax" / "xla"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert outputs.cache_dir("corpus") == (
      tmp_path / "home" / ".cache" / "lm_jax" / "corpus")


@pytest.mark.parametrize("target, kwargs, message", [
    ("", {}, "--out is empty: name the file to write, e.g. --out=out.png"),
    ("DIR", {}, "is a directory; name a file in it, e.g. --out=DIR/out.png"),
    ("DIR/old.png", dict(replace=False), "exists; pass --force to replace"),
    ("DIR/x.txt", {}, "cannot write a .txt file; name a .png file"),
    ("DIR/missing/x.png", {}, "the folder DIR/missing does not exist"),
    ("DIR/old.png/x.png", {}, "is not a folder"),
])
def test_a_target_that_cannot_be_written_is_refused(tmp_path, target, kwargs,
                                                    message):
  (tmp_path / "old.png").write_text("")
  target = target.replace("DIR", str(tmp_path))
  with pytest.raises(UserError) as caught:
    outputs.check_target(target, suffixes=(".png",), **kwargs)
  assert message.replace("DIR", str(tmp_path)) in str(caught.value)


def test_a_writable_target_is_returned(tmp_path):
  (tmp_path / "old.png").write_text("")
  assert outputs.check_target(tmp_path / "old.png") == tmp_path / "old.png"
  new = tmp_path / "a" / "b" / "x.png"
  assert outputs.check_target(new, make_folder=True) == new
  assert outputs.existing_folder(new.parent) == tmp_path


def test_a_write_replaces_the_file_whole(tmp_path):
  out = tmp_path / "sub" / "m.bin"
  outputs.write_replacing(out, lambda tmp: tmp.write_text("new"))
  assert out.read_text() == "new" and os.listdir(out.parent) == ["m.bin"]
  assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
  out = tmp_path / "m.bin"
  out.write_text("old")

  def fail(tmp):
    tmp.write_text("half")
    raise OSError(28, "No space left on device")

  with pytest.raises(UserError, match="No space left on device"):
    outputs.write_replacing(out, fail)
  assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]
