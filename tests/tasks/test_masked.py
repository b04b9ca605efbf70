"""The masked task (lm_jax/tasks/masked.py): its objective's loss, its
configs and settings, and a run trained on one line that fills, inspects
and serves its commands. (The model, masking and unmasking:
tests/models/test_mlm.py, tests/data/test_masking.py,
tests/generation/test_unmask.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import char_mlm, char_tf
from conftest import run_command
from lm_jax.data import masking
from lm_jax.errors import UserError
from lm_jax.special_tokens import MASK_ID
from lm_jax.tasks.masked import MaskedTask
from lm_jax.training import losses

from data.test_masking import scheme

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow

LINE = "To be, or not to be, that is the question.\n"


def test_loss_counts_only_the_chosen_positions():
  data = masking.MaskedData(jnp.arange(500) % 40 + 5, scheme())
  objective = MaskedTask.objective
  inputs, labels = objective.get_batch(data, jax.random.key(2), 8, 32)
  targets, weights = objective.targets(labels), objective.weights(labels)
  logits = jax.random.normal(jax.random.key(3), (8, 32, 50))
  loss = losses.cross_entropy(logits, targets, weights)
  chosen = np.asarray(weights) > 0
  noise = jax.random.normal(jax.random.key(4), logits.shape)
  other = losses.cross_entropy(
      logits + noise * ~chosen[..., None], targets, weights)
  np.testing.assert_allclose(loss, other, rtol=1e-6)
  nats = np.asarray(losses.token_nats(logits, targets))
  np.testing.assert_allclose(loss, nats[chosen].mean(), rtol=1e-5)


def test_diffusion_loss_is_the_weighted_mean_per_token():
  """A model that gives every hidden token c nats has a bound of c nats per
  token, whatever the rates drawn."""
  data = masking.MaskedData(jnp.arange(500) % 40 + 5, scheme("diffusion"))
  objective = MaskedTask.objective
  _, labels = objective.get_batch(data, jax.random.key(5), 16, 32)
  targets, weights = objective.targets(labels), objective.weights(labels)
  logits = jnp.zeros((16, 32, 50))  # uniform: log(50) nats everywhere
  loss = losses.cross_entropy(logits, targets, weights)
  np.testing.assert_allclose(loss, np.log(50), rtol=1e-5)
  sums = losses.loss_sums(logits, targets, weights)
  np.testing.assert_allclose(sums.nats / targets.size, np.log(50), rtol=1e-5)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
  """char_mlm:smoke trained on one line repeated: it knows the line."""
  from lm_jax.loop import trainer
  text = tmp_path_factory.mktemp("text") / "line.txt"
  text.write_text(LINE * 300, encoding="utf-8")
  config = char_mlm.get_config("smoke")
  config.data.path = str(text)
  config.train.update(num_steps=400, steps_per_call=50, log_every=400,
                      eval_every=400, batch_size=16, learning_rate=3e-3)
  workdir = tmp_path_factory.mktemp("mlm")
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.slow
def test_filling_a_memorised_line_returns_it(memorised, capsys):
  from lm_jax import tasks
  from lm_jax.runs import rundir
  run = rundir.load_run(memorised)
  task = tasks.task_of(run.model)
  task.fill(run, "not to __, that is t__ question", jax.random.key(0))
  out = capsys.readouterr().out
  assert out.splitlines()[0] == "not to be, that is the question"
  assert "blank 4" in out and "blank 5" not in out


@pytest.mark.slow
def test_commands_on_a_masked_run(memorised, tmp_path):
  sample = ("lm_jax.sample", f"--workdir={memorised}")
  out = run_command(*sample, "--prompt=To be", "--max_new_tokens=12",
                   "--unmask_steps=4", "--show_steps", "--temperature=0")
  assert out.returncode == 0, out.stderr
  assert "step 4/4" in out.stdout and out.stdout.count("_") >= 12
  for bad, says in ((["--fill=no blank"], "no blank"),
                    (["--fill=" + "_" * 40], "more than the model's context"),
                    (["--fill=to b~ _"], "not in the model's vocabulary"),
                    (["--prompt=To", "--beam=2"], "drop --beam")):
    out = run_command(*sample, *bad)
    assert out.returncode == 2 and says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
  out = run_command("lm_jax.cli.inspect_run", f"--workdir={memorised}",
                   "--prompt=or not to be", f"--out={tmp_path / 'a.png'}")
  assert out.returncode == 0, out.stderr
  out = run_command("lm_jax.cli.export", f"--workdir={memorised}",
                   f"--out={tmp_path / 'm.safetensors'}")
  assert out.returncode == 0, out.stderr
  out = run_command("lm_jax.sample", f"--model={tmp_path / 'm.safetensors'}",
                   "--fill=or not to __, that")
  assert out.returncode == 0 and out.stdout.startswith("or not to be, that")


@pytest.mark.slow
def test_inspect_draws_the_distribution_at_each_blank(memorised, tmp_path):
  from lm_jax import tasks
  from lm_jax.runs import rundir
  run = rundir.load_run(memorised)
  ids, dists = tasks.task_of(run.model).blank_distributions(
      run, "or not to _e, that", top=4)
  assert [pos for pos, _ in dists] == [10] and ids[10] == MASK_ID
  (_, candidates), = dists
  assert len(candidates) == 4 and candidates[0][0] == "b"
  probs = [p for _, p in candidates]
  assert probs == sorted(probs, reverse=True) and 0.5 < probs[0] <= 1.0
  out = run_command("lm_jax.cli.inspect_run", f"--workdir={memorised}",
                   "--prompt=or not to _e", f"--out={tmp_path / 'a.png'}")
  assert out.returncode == 0, out.stderr
  assert "blank 1 (token 10): 'b'" in out.stdout
  assert (tmp_path / "a_blanks.png").stat().st_size > 0


@pytest.mark.slow
def test_bidirectional_attention_has_weight_right_of_the_diagonal(memorised):
  from lm_jax.runs import rundir
  from lm_jax.views import internals
  run = rundir.load_run(memorised)
  tokens = run.tokenizer.encode("or not to be")
  inside = internals.model_internals(run.model, run.params, tokens)
  upper = np.triu(np.ones((len(tokens),) * 2, bool), 1)
  assert inside.values[..., upper].sum() > 1.0
  np.testing.assert_allclose(inside.values.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["char_mlm", "char_mlm:diffusion",
                                  "word_mlm", "word_mlm:smoke"])
def test_configs_validate(name):
  from lm_jax import config as config_lib
  from configs import word_mlm
  module, _, variant = name.partition(":")
  config = {"char_mlm": char_mlm, "word_mlm": word_mlm}[module].get_config(
      variant)
  config_lib.validate(config)
  assert config.model.kind == "mlm" and config.train.mask_scheme in (
      masking.SCHEMES)


def test_bad_mask_settings_are_refused(tmp_path):
  from lm_jax import tasks
  config = char_mlm.get_config("smoke")
  config.train.mask_share = 0.95
  with pytest.raises(UserError, match="random_share"):
    tasks.task_for(config).load(config, tmp_path)


def test_causal_config_untouched_by_the_mask_settings():
  """The text task's configs hold no masking settings; their tokenizers no
  `<mask>`."""
  config = char_tf.get_config("smoke")
  assert "mask_scheme" not in config.train
