"""Checkpoints written by earlier code still restore and resume: bit for
bit on the CPU kind that wrote them, to float32 rounding on others.

The fixtures (tests/fixtures/ckpt_*, written by make_checkpoints.py with the
code of the commit its docstring names) hold a run stopped at step 4 of 8
in each checkpoint layout, and what that code did from there to step 8.
"""

import json
import shutil
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.loop import trainer
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import steps

from conftest import REPO, assert_scaled_close

FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_checkpoints  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["plain", "carry"])
def test_old_checkpoint_resumes_bitwise(layout, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURES / f"ckpt_{layout}", workdir)
  expected = json.loads((workdir / "expected.json").read_text())
  config = ml_collections.ConfigDict(rundir.read_config(workdir))
  config.data.path = str(FIXTURES / "corpus.txt")
  trainer.train_and_evaluate(config, workdir)
  losses = make_checkpoints.train_losses(workdir, make_checkpoints.STOP)
  params = rundir.load_run(workdir, make_checkpoints.END).params
  if make_checkpoints.cpu_model() == expected["cpu"]:  # the same XLA code
    assert losses == [tuple(x) for x in expected["losses"]]
    assert make_checkpoints.params_digest(params) == expected["params_sha256"]
  # Another host's XLA code sums in another order (see
  # assert_scaled_close): equal to a fraction of each quantity's scale.
  np.testing.assert_allclose(losses, expected["losses"], rtol=1e-5)
  want = make_checkpoints.load_params(workdir / "expected_params.npz")
  got = {jax.tree_util.keystr(path): leaf for path, leaf in
         jax.tree_util.tree_flatten_with_path(params)[0]}
  assert got.keys() == want.keys()
  assert_scaled_close(got, want, rel=1e-5)


def test_sampling_needs_no_optimiser_state(monkeypatch, tmp_path):
  """A run stays loadable after the optimiser changes: only parameters are
  restored. With another optax chain the whole train state no longer fits
  the checkpoint, which is the case load_run must survive. (A copy: loading
  rewrites the fixture's old tokenizer.json in the library's format.)"""
  workdir = tmp_path / "ckpt_plain"
  shutil.copytree(FIXTURES / "ckpt_plain", workdir)
  old = json.loads((workdir / "tokenizer.json").read_text())
  before = rundir.load_run(workdir)
  assert "kind" in old and tokenizers.kind_of(json.loads(
      (workdir / "tokenizer.json").read_text())) == old["kind"]
  assert before.tokenizer.vocab == old["vocab"]
  monkeypatch.setattr(steps, "make_optimizer", lambda train: optax.chain(
      optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9)))
  after = rundir.load_run(workdir)
  jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
  abstract = jax.eval_shape(lambda: steps.create_train_state(
      after.model, after.config.train, jax.random.key(0)))
  with pytest.raises(UserError, match="does not fit the model and optimiser"):
    checkpoints.restore(checkpoints.manager(workdir, read_only=True),
                        after.step, abstract)
  prompt = after.tokenizer.encode("LINE")[None]
  options = sampling.SamplingOptions(max_new_tokens=8, temperature=0)
  np.testing.assert_array_equal(
      sampling.generate(before.params, before.model, prompt,
                        jax.random.key(0), options),
      sampling.generate(after.params, after.model, prompt,
                        jax.random.key(0), options))


def test_settings_added_since_are_no_difference():
  """A config.json written before a fixed setting existed resumes under
  today's config, which has it at its default."""
  from configs import char_tf
  written = json.loads((FIXTURES / "ckpt_plain" / "config.json").read_text())
  stored = rundir.read_config(FIXTURES / "ckpt_plain")
  today = char_tf.get_config("smoke")
  today.model.update(written["model"])
  today.train.seq_len = written["train"]["seq_len"]
  assert "attention" not in written["model"]
  assert rundir.config_differences(stored, rundir.config_to_dict(today)) == []
  today.model.position = "rope"
  assert rundir.config_differences(stored, rundir.config_to_dict(today)) == [
      "model.position: stored 'learned', requested 'rope'"]
  # How attention is computed (today's default: blocked) is no difference.
  for attention in ("dense", "blocked"):
    today.model.update(position="learned", attention=attention,
                       attention_tile=8)
    assert rundir.config_differences(stored,
                                     rundir.config_to_dict(today)) == []
