"""The masked LM: a bidirectional encoder, its masking, filling and
unmasking (lm_jax/models/mlm.py, lm_jax/data/masking.py,
lm_jax/generation/unmask.py, lm_jax/tasks/masked.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import char_mlm, char_tf
from conftest import run_command
from lm_jax.data import masking, tokenizers
from lm_jax.errors import UserError
from lm_jax.generation import sampling, unmask
from lm_jax.models import check_config, make_model
from lm_jax.special_tokens import MASK, MASK_ID
from lm_jax.tasks.masked import MaskedTask
from lm_jax.training import losses, steps

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow

LINE = "To be, or not to be, that is the question.\n"


def scheme(kind="bert", vocab=50, **changes):
  return masking.MaskScheme(**{**dict(scheme=kind, rate=0.15, mask_share=0.8,
                                      random_share=0.1, vocab_size=vocab),
                               **changes})


def test_encoder_sees_the_future_causal_model_does_not():
  config = char_mlm.get_config("smoke")
  mlm = make_model(config.model, 40)
  causal = make_model(ml_collections.ConfigDict(
      {**config.model.to_dict(), "kind": "transformer"}), 40)
  params = jax.jit(mlm.init)(jax.random.key(0),
                             jnp.zeros((1, 8), jnp.int32))["params"]
  tokens = jnp.arange(5, 13)[None]  # (1, 8)
  later = tokens.at[0, 6].set(20)  # change position 6
  for model, sees in ((mlm, True), (causal, False)):
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, later)
    assert bool(jnp.any(jnp.abs(a[0, :6] - b[0, :6]) > 1e-6)) == sees


def test_blocked_attention_refused_for_the_encoder():
  config = char_mlm.get_config("smoke")
  config.model.attention = "blocked"
  with pytest.raises(UserError, match="causal only"):
    check_config(config.model, config.train)


def test_tokenizer_reserves_mask_only_when_asked():
  plain = tokenizers.build_tokenizer("char", "abc")
  assert plain.vocab == ["<unk>", "a", "b", "c"]
  masked = tokenizers.build_tokenizer("char", "abc", mask=True)
  assert masked.vocab[MASK_ID] == MASK and masked.vocab[-3:] == list("abc")
  word = tokenizers.build_tokenizer("word", "a b a", mask=True)
  assert word.vocab[MASK_ID] == MASK
  assert list(masked.encode("<mask>")) != [MASK_ID]  # never read from text


def test_bert_masking_statistics_and_padding():
  B, T = 4000, 40
  key_t, key_m = jax.random.split(jax.random.key(0))
  tokens = jax.random.randint(key_t, (B, T), masking.FIRST_TEXT_ID, 50)
  lengths = jnp.arange(B) % 31 + 10  # 10..40 valid, then padding
  valid = jnp.arange(T) < lengths[:, None]
  inputs, targets, weights = map(np.asarray, masking.mask_tokens(
      key_m, tokens, valid, scheme()))
  chosen, valid, tokens = weights > 0, np.asarray(valid), np.asarray(tokens)
  assert not chosen[~valid].any() and (inputs[~valid] == tokens[~valid]).all()
  assert (chosen.sum(1) == np.maximum(np.round(0.15 * lengths), 1)).all()
  assert set(np.unique(weights)) == {0.0, 1.0}
  assert (targets == tokens).all()
  assert (inputs[~chosen] == tokens[~chosen]).all()
  hidden = (inputs == MASK_ID)[chosen].mean()
  kept = (inputs == tokens)[chosen].mean()
  assert abs(hidden - 0.8) < 0.01
  # A random token equals the original 1/45 of the time: kept ~ 0.1 + 0.1/45.
  assert abs(kept - (0.1 + 0.1 / 45)) < 0.01
  assert abs(1 - hidden - kept - 0.1 * 44 / 45) < 0.01


def test_diffusion_masking_rate_uniform_and_weights():
  B, T = 6000, 20
  tokens = jnp.full((B, T), 7)
  valid = jnp.arange(T) < jnp.where(jnp.arange(B) % 2, T, 12)[:, None]
  inputs, _, weights = map(np.asarray, masking.mask_tokens(
      jax.random.key(1), tokens, valid, scheme("diffusion")))
  chosen, valid = weights > 0, np.asarray(valid)
  assert not chosen[~valid].any()
  assert (inputs[chosen] == MASK_ID).all() and (inputs[~chosen] == 7).all()
  n = valid.sum(1)
  k = chosen.sum(1)
  # Every hidden position weighs n / k (1 / rate): each row's weights sum
  # to its n, so the weighted mean over the batch is sum(w nats) / tokens.
  np.testing.assert_allclose(weights.sum(1), n, rtol=1e-5)
  for length in (12, 20):
    counts = np.bincount(k[n == length], minlength=length + 1)[1:]
    assert counts.min() > 0.75 * counts.mean()  # uniform on 1..n
    assert counts.max() < 1.25 * counts.mean()


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


def fake_logits(confidence):
  """Logits that put `confidence[t]` of the mass on token 10 + t."""
  T, V = len(confidence), 40
  probs = np.full((T, V), 0.0)
  probs[:, 5:] = ((1 - np.asarray(confidence)) / (V - 6))[:, None]
  probs[np.arange(T), 10 + np.arange(T)] = confidence
  logits = jnp.log(jnp.asarray(probs))
  return lambda x: logits[None]


@pytest.mark.parametrize("num_steps", [1, 7])
@pytest.mark.parametrize("order", unmask.ORDERS)
def test_unmasking_ends_with_no_mask(num_steps, order):
  confidence = [0.9, 0.5, 0.7, 0.3, 0.8, 0.6]
  tokens = jnp.array([5, MASK_ID, MASK_ID, 6, MASK_ID, MASK_ID])
  out = jax.jit(lambda t, k: unmask.unmask_loop(
      fake_logits(confidence), t, k, num_steps, order))(
          tokens, jax.random.key(0))
  assert MASK_ID not in np.asarray(out.tokens)
  np.testing.assert_array_equal(out.tokens, [5, 11, 12, 6, 14, 15])
  revealed = (np.asarray(out.canvases) != MASK_ID).sum(1) - 2
  np.testing.assert_array_equal(
      revealed, np.cumsum(unmask.reveal_counts(jnp.int32(4), num_steps)))
  if order == "confidence" and num_steps == 7:  # 0.8, 0.7, 0.6, then 0.5
    # reveal_counts(4, 7) is [0, 1, 0, 1, 0, 1, 1]
    assert list(np.asarray(out.revealed_at)[[4, 2, 5, 1]]) == [1, 3, 5, 6]
  np.testing.assert_allclose(np.asarray(out.top_probs)[1, 0], 0.5, rtol=1e-5)


def test_unmasking_samples_with_temperature():
  tokens = jnp.full((6,), MASK_ID)
  out = unmask.unmask_loop(fake_logits([0.5] * 6), tokens, jax.random.key(1),
                           3, "random", sampling.SamplingOptions(
                               temperature=1.0))
  assert MASK_ID not in np.asarray(out.tokens)
  assert (np.asarray(out.tokens) >= unmask.FIRST_TEXT_ID).all()


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
