"""Data parallelism: 8 simulated CPU devices against one device."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.loop import trainer
from lm_jax.models import make_model
from lm_jax.runs import rundir
from lm_jax.training import steps

from conftest import (REPO, assert_reordered_close, assert_scaled_close,
                      train_on_8_devices)


def _overrides(text_file, **train):
  return {"data.path": str(text_file), "train.num_steps": 12,
          "train.eval_every": 12, "train.sample_tokens": 0,
          **{f"train.{k}": v for k, v in train.items()}}


def _run_here(smoke_config, overrides, workdir, stop_at=None):
  smoke_config.update_from_flattened_dict(overrides)
  return trainer.train_and_evaluate(smoke_config, workdir, stop_at=stop_at)


def _params(workdir, step):
  return rundir.load_run(workdir, step).params


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True])
def test_eight_devices_match_one(smoke_config, text_file, tmp_path, fsdp):
  overrides = _overrides(text_file, fsdp=fsdp)
  many = train_on_8_devices(overrides, tmp_path / "eight")
  one = _run_here(smoke_config, overrides, tmp_path / "one")
  # Same data and keys; only the order of floating-point sums differs.
  assert many["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
  # 12 steps of sums split over 8 devices: see assert_scaled_close.
  assert_scaled_close(_params(tmp_path / "eight", 12),
                      _params(tmp_path / "one", 12), rel=1e-4)


@pytest.mark.slow
def test_eight_devices_match_one_with_recipe_options(smoke_config, text_file,
                                                    tmp_path):
  """Every option of lm_jax/models/recipe.py and the z-loss, sharded."""
  overrides = {**_overrides(text_file, fsdp=True, z_loss=1e-3),
               **{f"model.{k}": v for k, v in dict(
                   position="rope", norm="rmsnorm", qk_norm=True,
                   mlp="swiglu", zero_init_proj=True, logit_softcap=15.0,
                   tie_embeddings=False).items()}}
  many = train_on_8_devices(overrides, tmp_path / "eight")
  one = _run_here(smoke_config, overrides, tmp_path / "one")
  assert many["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
  # 12 steps of sums split over 8 devices: see assert_scaled_close.
  assert_scaled_close(_params(tmp_path / "eight", 12),
                      _params(tmp_path / "one", 12), rel=1e-4)


@pytest.mark.slow
def test_checkpoint_from_8_devices_resumes_on_1(smoke_config, text_file,
                                                tmp_path):
  overrides = _overrides(text_file, fsdp=True, eval_every=6)
  train_on_8_devices(overrides, tmp_path / "run", stop_at=6)
  resumed = _run_here(smoke_config, overrides, tmp_path / "run")
  assert resumed["step"] == 12
  straight = _run_here(smoke_config.copy_and_resolve_references(), overrides,
                       tmp_path / "straight")
  assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-4)


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch(smoke_config):
  smoke_config.train.batch_size = 16
  model = make_model(smoke_config.model, 20)
  state = steps.create_train_state(model, smoke_config.train,
                                   jax.random.key(0))
  x = jax.random.randint(jax.random.key(1), (16, 32), 0, 20)
  y = jax.random.randint(jax.random.key(2), (16, 32), 0, 20)
  key = jax.random.key(3)
  _, m1 = steps.train_step(state, x, y, key)
  _, m4 = steps.train_step(state, x, y, key, grad_accum_steps=4)
  # Means over the B x T tokens, summed in another order by 4 micro-batches:
  # compared before Adam, whose first step lr * g / (|g| + eps) turns
  # rounding in a gradient near zero into a much larger parameter change.
  tokens = x.size
  assert_reordered_close(m4["loss"], m1["loss"], terms=tokens)
  assert_reordered_close(m4["grad_norm"], m1["grad_norm"], terms=tokens)
  grads = [steps.accumulated_grads(state.params, model, x, y, key, n)[1]
           for n in (1, 4)]
  assert_reordered_close(grads[1], grads[0], terms=tokens)


@pytest.mark.slow
def test_bfloat16_tracks_float32(smoke_config, text_file, tmp_path):
  overrides = _overrides(text_file, num_steps=20, eval_every=20)
  f32 = _run_here(smoke_config.copy_and_resolve_references(), overrides,
                  tmp_path / "f32")
  smoke_config.model.dtype = "bfloat16"
  bf16 = _run_here(smoke_config, overrides, tmp_path / "bf16")
  # bf16 products keep about 3 significant digits: the losses agree to 1%.
  assert bf16["val_loss"] == pytest.approx(f32["val_loss"], rel=0.01)


@pytest.mark.slow  # a process of its own
def test_batch_must_divide_by_devices(smoke_config, text_file, tmp_path):
  # A process of its own: 8 simulated devices are set before JAX starts.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run(
      [sys.executable, "-m", "lm_jax.train",
       "--config=configs/char_tf.py:smoke", "--config.train.batch_size=12",
       f"--config.data.path={text_file}", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert "batch_size (12) must be divisible by the number of devices (8)" \
      in out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()


def test_accumulation_must_divide_batch(smoke_config, tmp_path):
  smoke_config.train.grad_accum_steps = 3
  with pytest.raises(UserError, match="divisible by config.train.grad_accum"):
    trainer.train_and_evaluate(smoke_config, tmp_path / "run")


