"""lm_jax/training/programs.py: compiled programs kept whole on disk."""

import functools
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, train_args
from lm_jax.loop import trainer
from lm_jax.training import programs


@functools.partial(jax.jit, static_argnames=("power",))
def _f(tree, scale, *, power):
  return {"y": tree["x"] ** power * scale}, jnp.sum(tree["x"])


@pytest.fixture
def folder(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
  programs.use_folder(tmp_path / "programs")
  yield tmp_path / "programs"
  programs.use_folder(None)


def _compiled(args, power=2, settings=None):
  return programs.compiled("f", _f, args, dict(power=power),
                           settings or dict(a=1))


def test_a_stored_program_runs_without_tracing(folder, monkeypatch):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  first = _compiled(args)
  assert len(list(folder.iterdir())) == 1
  monkeypatch.setattr(type(_f), "trace", lambda *a, **k: pytest.fail(
      "traced although the program was stored"), raising=False)
  again = _compiled(args)
  for a, b in zip(jax.tree.leaves(first(*args)), jax.tree.leaves(again(*args))):
    np.testing.assert_array_equal(a, b)


def test_anything_the_program_depends_on_is_a_new_key(folder):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  _compiled(args)
  _compiled(args, power=3)
  _compiled(args, settings=dict(a=2))
  _compiled(({"x": jnp.arange(4.0)}, jnp.float32(2.0)))
  _compiled(({"x": jnp.arange(3)}, jnp.float32(2.0)))
  assert len(list(folder.iterdir())) == 5
  assert programs.program_key("f", {}, args, {}) != programs.program_key(
      "g", {}, args, {})


def test_an_unreadable_entry_is_a_miss(folder):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  _compiled(args)
  (entry,) = folder.iterdir()
  entry.write_bytes(b"not a program")
  out, total = _compiled(args)(*args)
  np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])
  assert float(total) == 3.0
  assert entry.read_bytes() != b"not a program"  # compiled and stored again


def test_off_without_a_folder(tmp_path):
  programs.use_folder(None)
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  out, _ = _compiled(args)(*args)
  np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])


def _losses(workdir) -> list:
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  return [(r["step"], r.get("loss"), r.get("grad_norm"), r.get("val_loss"))
          for r in records]


def test_a_run_from_stored_programs_trains_exactly_as_one_that_traced(
    folder, tmp_path, text_file, smoke_config):
  config = smoke_config
  config.data.path = str(text_file)
  # Chunks of 4 and 2: both forms of the train step (whole and shorter).
  config.train.update(num_steps=6, steps_per_call=4, log_every=6,
                      eval_every=6, sample_tokens=0)
  trainer.train_and_evaluate(config, tmp_path / "a")
  stored = sorted(p.name for p in folder.iterdir())
  assert [n.split("-")[0] for n in stored] == ["init", "train_steps",
                                              "train_steps"]
  trainer.train_and_evaluate(config, tmp_path / "b")
  assert sorted(p.name for p in folder.iterdir()) == stored
  assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
  assert len(_losses(tmp_path / "a")) == 2  # the log and the evaluation


@pytest.mark.slow  # three processes, each compiling
def test_a_second_command_starts_from_the_stored_program(tmp_path, text_file):
  """Across processes, with JAX's cache already warm: the stored program is
  compiled afresh (one read from that cache would not load elsewhere)."""
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
         "LM_JAX_PROGRAM_CACHE": "1",
         "XDG_CONFIG_HOME": str(tmp_path / "config")}
  runs = []
  for name in ("a", "b", "c"):
    out = subprocess.run(
        train_args(text_file, tmp_path / name, num_steps=6, steps_per_call=4,
                   log_every=6, eval_every=6),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "first step's program" in out.stdout
    runs.append(_losses(tmp_path / name))
  assert runs[0] == runs[1] == runs[2]
  # The initial state's program (on one device) and both train steps'
  # (on the two of the mesh).
  assert len(list((tmp_path / "xla" / "programs").iterdir())) == 3


def test_a_key_holding_an_address_is_not_stored(folder):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  assert programs.program_key("f", dict(act=repr(jnp.tanh)), args, {}) is None
  out, _ = _compiled(args, settings=dict(act=repr(lambda x: x)))(*args)
  np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])
  assert not folder.exists() or not list(folder.iterdir())


@jax.jit
def _qr(x):
  return jnp.linalg.qr(x)[0]


def test_a_program_calling_outside_xla_is_not_stored(folder):
  """LAPACK's QR (an orthogonal init) is registered while lowering: a start
  that skips lowering would crash on it."""
  x = jnp.eye(3) * 2.0
  q = programs.compiled("qr", _qr, (x,), {}, dict(a=1))(x)
  np.testing.assert_allclose(np.abs(q), np.eye(3), atol=1e-6)
  assert not folder.exists() or not list(folder.iterdir())


def _entry(folder):
  (entry,) = folder.iterdir()
  return entry


def test_a_planted_pickle_never_runs(folder, tmp_path, capsys):
  """Anyone who can write the folder could plant a pickle that runs code:
  a file not signed with the user's key is never unpickled."""
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  _compiled(args)
  entry, ran = _entry(folder), tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (os.system, (f"touch {ran}",))

  import pickle
  text = programs.key_text("f", dict(a=1), args, dict(power=2))
  body = programs._MAGIC + text.encode() + b"\n" + pickle.dumps(Payload())
  for planted in (pickle.dumps(Payload()), body + b"\0" * 32):
    entry.write_bytes(planted)
    out, _ = _compiled(args)(*args)
    np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])
    assert not ran.exists()
  assert "not signed with your key" in capsys.readouterr().err
  assert entry.read_bytes().startswith(programs._MAGIC)  # rebuilt


def test_a_file_for_another_key_is_not_used(folder, capsys):
  """A program compiled for another setting, copied under this key's name,
  is rebuilt (it would run while the run logs its own settings)."""
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  _compiled(args, power=3)
  other = _entry(folder)
  name = programs.program_key("f", dict(a=1), args, dict(power=2))
  other.rename(folder / name)
  out, _ = _compiled(args)(*args)
  np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])  # x**2 * 2, not **3
  assert "built for another program" in capsys.readouterr().err


def test_jax_options_that_change_programs_change_the_key(folder):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  before = programs.program_key("f", {}, args, {})
  for option, value in (("jax_threefry_partitionable", False),
                        ("jax_default_matmul_precision", "highest")):
    old = getattr(jax.config, option)
    jax.config.update(option, value)
    try:
      assert programs.program_key("f", {}, args, {}) != before, option
    finally:
      jax.config.update(option, old)
  assert programs.program_key("f", {}, args, {}) == before


def test_a_folder_others_can_write_is_refused(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
  shared = tmp_path / "shared"
  shared.mkdir()
  shared.chmod(0o777)
  programs.use_folder(shared)
  try:
    args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
    out, _ = _compiled(args)(*args)
  finally:
    programs.use_folder(None)
  np.testing.assert_allclose(out["y"], [0.0, 2.0, 8.0])
  assert not list(shared.iterdir())
  err = capsys.readouterr().err
  assert "program store off" in err and "chmod 700" in err


def test_the_folder_and_key_are_the_users_alone(folder, tmp_path):
  args = ({"x": jnp.arange(3.0)}, jnp.float32(2.0))
  _compiled(args)
  assert folder.stat().st_mode & 0o777 == 0o700
  key = programs.key_file()
  assert key.is_relative_to(tmp_path / "config")
  assert key.stat().st_mode & 0o777 == 0o600
