"""One-file export: the safetensors layout, and the same samples as the run."""


import jax
import numpy as np
import pytest
import safetensors.numpy

from conftest import run_command
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.runs import modelfile, rundir


def test_flax_paths_round_trip_through_a_safetensors_file(tmp_path):
  params = {"block_0": {"attn": {"kernel": np.arange(6, dtype=np.float32
                                                     ).reshape(2, 3)}},
            "pos_embed": np.zeros((0, 4), np.float32)}
  path = tmp_path / "t.safetensors"
  safetensors.numpy.save_file(modelfile.flatten(params), path, {"note": "x"})
  tensors, metadata = modelfile.read_safetensors(path)
  assert metadata == {"note": "x"}
  assert sorted(tensors) == ["block_0/attn/kernel", "pos_embed"]
  back = modelfile.unflatten(tensors)
  jax.tree.map(np.testing.assert_array_equal, back, params)


@pytest.mark.slow
def test_the_exported_file_samples_as_the_run_does(smoke_run, tmp_path):
  out = tmp_path / "model.safetensors"
  assert modelfile.export_run(smoke_run, out) == 4
  _, tokenizer, model, params, step = modelfile.load_model(out)
  _, run_tokenizer, _, run_params, run_step = rundir.load_run(smoke_run)
  assert step == run_step and tokenizer.to_json() == run_tokenizer.to_json()
  assert jax.tree.structure(params) == jax.tree.structure(run_params)
  jax.tree.map(np.testing.assert_array_equal, params, run_params)
  options = sampling.SamplingOptions(max_new_tokens=20, temperature=0.8)
  prompt = tokenizer.encode("LINE")
  texts = [sampling.generate_text(p, model, tokenizer, prompt,
                                  jax.random.key(3), options, num_samples=2)
           for p in (params, run_params)]
  assert texts[0] == texts[1] and len(texts[0][0]) == 20


@pytest.mark.slow
def test_command_line_export_then_sample(smoke_run, tmp_path):
  out = tmp_path / "m.safetensors"
  run = run_command
  done = run("lm_jax.cli.export", f"--workdir={smoke_run}", f"--out={out}")
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith(f"wrote {out} (step 4)")
  done = run("lm_jax.sample", f"--model={out}", "--prompt=LINE",
             "--max_new_tokens=30", "--seed=5")
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith("LINE") and len(done.stdout) == 4 + 30 + 1
  done = run("lm_jax.sample", f"--model={out}", f"--workdir={smoke_run}")
  assert done.returncode == 2 and done.stderr == (
      "error: pass either --workdir=DIR (a training run) or --model=FILE "
      "(from lm-jax-export)\n")


def test_a_file_that_is_not_ours_is_refused(tmp_path):
  path = tmp_path / "other.safetensors"
  safetensors.numpy.save_file({"w": np.ones(2, np.float32)}, path, {})
  with pytest.raises(UserError, match="holds no lm_jax config and tokenizer"):
    modelfile.load_model(path)
  path.write_bytes(b"not a model")
  with pytest.raises(UserError, match=f"cannot read {path} as a safetensors"):
    modelfile.load_model(path)
