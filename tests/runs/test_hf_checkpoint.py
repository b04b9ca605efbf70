"""Checkpoints in Hugging Face's layout: lm-jax-export --format=hf gives a
folder `transformers` loads with lm_jax's logits; --config.init_from starts
a run from a Llama that `transformers` built."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import char_tf
from conftest import corpus_text, init_with_random_biases, refused, run_command
from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.runs import hf_checkpoint, rundir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ("ROMEO: the quick", "LINE 7: lazy dog.\n", "fox")


def hf_logits(folder, ids: np.ndarray) -> np.ndarray:
  model = transformers.AutoModelForCausalLM.from_pretrained(folder)
  with torch.no_grad():
    return model(torch.tensor(ids[None])).logits[0].numpy()


def lm_jax_logits(model, params, ids: np.ndarray) -> np.ndarray:
  return np.asarray(model.apply({"params": params}, jnp.asarray(ids)[None]))[0]


def a_run(**model_settings) -> rundir.Run:
  """A tiny char model with random weights and biases (nothing trained)."""
  config = char_tf.get_config("smoke")
  config.model.update(model_settings)
  tok = tokenizers.build_tokenizer("char", corpus_text() + "ROMEO",
                                   specials=True)
  model = make_model(config.model, tok.vocab_size)
  return rundir.Run(config, tok, model, init_with_random_biases(model), 1)


@pytest.mark.parametrize("settings", [
    dict(),  # the plain GPT: GPT-2
    dict(tie_embeddings=False, gelu_approximate=False, scan_layers=True),
    dict(position="rope", norm="rmsnorm", mlp="swiglu"),  # Llama
    dict(position="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False,
         scan_layers=True),
], ids=["gpt2", "gpt2-untied-erf", "llama", "llama-untied"])
def test_export_gives_lm_jax_logits_in_transformers(settings, tmp_path):
  run = a_run(**settings)
  arch = hf_checkpoint.export_hf(run, tmp_path)
  assert arch == ("LlamaForCausalLM" if "position" in settings
                  else "GPT2LMHeadModel")
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  for prompt in PROMPTS:
    ids = run.tokenizer.encode(prompt)
    assert hf_tok(prompt)["input_ids"] == ids.tolist()
    np.testing.assert_allclose(hf_logits(tmp_path, ids),
                               lm_jax_logits(run.model, run.params, ids),
                               atol=1e-4)
  # ... and reads back (init_from) as the same parameters.
  back = hf_checkpoint.read(tmp_path)
  params = hf_checkpoint.initial_params(back, run.config.model)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               params, run.params)


def test_the_shipped_hf_variant_maps_to_llama():
  config = char_tf.get_config("hf")
  assert hf_checkpoint.architecture(config.model) == "llama"


@pytest.mark.parametrize("settings, fragment", [
    (dict(), "config.model.mlp='relu2'"),  # the default recipe
    (dict(mlp="swiglu"), "config.model.qk_norm=True"),
    (dict(mlp="swiglu", qk_norm=False, logit_softcap=15.0),
     "config.model.logit_softcap=15.0"),
    (dict(mlp="swiglu", qk_norm=False, norm="layernorm"),
     "config.model.norm='layernorm'"),
    (dict(kind="lstm"), "config.model.kind='lstm'"),
])
def test_recipes_without_a_counterpart_are_refused_naming_the_option(
    settings, fragment):
  model = ml_collections.ConfigDict(char_tf.get_config("").model.to_dict())
  model.update(settings)
  with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
    hf_checkpoint.architecture(model)


def test_export_command_writes_a_folder_and_refuses_the_default_recipe(
    smoke_run, tmp_path):
  out = tmp_path / "hf"
  done = run_command("lm_jax.cli.export", f"--workdir={smoke_run}",
                     "--format=hf", f"--out={out}")
  assert done.returncode == 0, done.stderr
  assert {"config.json", "model.safetensors", "generation_config.json",
          "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json"} <= {p.name for p in out.iterdir()}
  run = rundir.load_run(smoke_run)
  ids = run.tokenizer.encode("LINE 3: the")
  np.testing.assert_allclose(hf_logits(out, ids),
                             lm_jax_logits(run.model, run.params, ids),
                             atol=1e-4)
  refused(run_command("lm_jax.cli.export", f"--workdir={smoke_run}",
                      "--format=hf", f"--out={out}"), "not empty", "--force")
  default = tmp_path / "default_run"
  default.mkdir()
  config = json.loads((smoke_run / "config.json").read_text())
  config["model"].update(char_tf.RECIPE)
  (default / "config.json").write_text(json.dumps(config))
  for name in ("tokenizer.json", "checkpoints"):
    (default / name).symlink_to(smoke_run / name)
  refused(run_command("lm_jax.cli.export", f"--workdir={default}",
                      "--format=hf", f"--out={tmp_path / 'x'}"),
          "config.model.mlp='relu2' has no counterpart")
  assert not (tmp_path / "x").exists()


def a_llama(folder, tok, seed: int = 0):
  """A small random LlamaForCausalLM saved by transformers, with lm_jax's
  tokenizer beside it; big initial weights, so its loss is far above a
  fresh model's."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=tok.vocab_size, hidden_size=48, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
      max_position_embeddings=64, initializer_range=0.2,
      tie_word_embeddings=False)
  model = transformers.LlamaForCausalLM(config)
  model.save_pretrained(folder)
  rundir.write_tokenizer(folder, tok)
  return model


@pytest.mark.slow
def test_init_from_a_transformers_llama_then_fine_tunes(tmp_path):
  from lm_jax.loop import trainer
  text = tmp_path / "corpus.txt"
  text.write_text(corpus_text(), encoding="utf-8")
  tok = tokenizers.build_tokenizer("char", corpus_text())
  llama = a_llama(tmp_path / "llama", tok)
  # Equal logits after import.
  checkpoint = hf_checkpoint.read(tmp_path / "llama")
  config = char_tf.get_config("smoke")
  config.init_from = str(tmp_path / "llama")
  hf_checkpoint.apply(config)
  assert (config.model.d_model, config.model.position, config.model.mlp) == (
      48, "rope", "swiglu")
  model = make_model(config.model, tok.vocab_size)
  params = hf_checkpoint.initial_params(checkpoint, config.model)
  ids = tok.encode("LINE 12: the quick brown fox")
  with torch.no_grad():
    want = llama(torch.tensor(ids[None])).logits[0].numpy()
  np.testing.assert_allclose(lm_jax_logits(model, params, ids), want,
                             atol=1e-4)
  # 20 steps of fine-tuning on the user's text lower the loss.
  config = char_tf.get_config("smoke")
  config.init_from = str(tmp_path / "llama")
  config.data.path = str(text)
  config.train.update(num_steps=20, eval_every=20, log_every=4,
                      sample_tokens=0, learning_rate=3e-3)
  trainer.train_and_evaluate(config, tmp_path / "run")
  logs = [json.loads(line) for line in
          (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  val_loss = [r["val_loss"] for r in logs if "val_loss" in r][-1]
  val = torch.tensor(tok.encode(corpus_text()[-2000:]).reshape(-1, 40)).long()
  with torch.no_grad():
    before = float(llama(val, labels=val).loss)  # the Llama's own
  assert val_loss < 0.8 * before
  # It started from the Llama: 20 small steps stay near its weights.
  run = rundir.load_run(tmp_path / "run")
  tuned = np.asarray(run.params["embed"]["embedding"])
  start = checkpoint.params["embed"]["embedding"]
  assert np.linalg.norm(tuned - start) < 0.5 * np.linalg.norm(start)
  stored = rundir.read_config(tmp_path / "run")
  assert stored["model"]["mlp"] == "swiglu"
  assert rundir.read_tokenizer(tmp_path / "run").vocab == tok.vocab


@pytest.mark.parametrize("change, fragment", [
    (dict(num_key_value_heads=2), "num_key_value_heads 2"),
    (dict(intermediate_size=100), "intermediate_size 100"),
    (dict(rms_norm_eps=1e-5), "rms_norm_eps 1e-05"),
])
def test_init_from_a_llama_lm_jax_cannot_compute_is_one_line(
    change, fragment, tmp_path):
  tok = tokenizers.build_tokenizer("char", corpus_text())
  a_llama(tmp_path, tok)
  config = json.loads((tmp_path / "config.json").read_text())
  config.update(change)
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match=fragment) as e:
    hf_checkpoint.read(tmp_path)
  assert "\n" not in str(e.value)


def test_init_from_a_folder_without_a_checkpoint_is_one_line(text_file,
                                                             tmp_path):
  out = run_command("lm_jax.cli.train", "--config=configs/char_tf.py:smoke",
                    f"--config.data.path={text_file}",
                    f"--config.init_from={tmp_path}",
                    f"--workdir={tmp_path / 'run'}")
  refused(out, "config.init_from=", "config.json and model.safetensors")


def test_init_from_reads_a_model_file_lm_jax_export_wrote(smoke_run,
                                                          tmp_path):
  from lm_jax.runs import modelfile
  modelfile.export_run(smoke_run, tmp_path / "m.safetensors")
  checkpoint = hf_checkpoint.read(tmp_path / "m.safetensors")
  run = rundir.load_run(smoke_run)
  assert checkpoint.settings == {
      k: run.config.model[k] for k in hf_checkpoint.MODEL_SETTINGS}
  assert checkpoint.tokenizer.vocab == run.tokenizer.vocab
  assert tokenizers.load_from(tmp_path / "m.safetensors").vocab == \
      run.tokenizer.vocab
  jax.tree.map(np.testing.assert_array_equal,
               hf_checkpoint.initial_params(checkpoint, run.config.model),
               run.params)
