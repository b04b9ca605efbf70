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
def folder(tmp_path):
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
         "LM_JAX_PROGRAM_CACHE": "1"}
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
