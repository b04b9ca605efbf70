"""Checkpoints in Hugging Face's layout, out (`lm-jax-export --format=hf`)
and in (`--config.init_from=DIR`).

A directory `transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads
with no code of ours: config.json, model.safetensors (float32, PyTorch's
names and layouts), generation_config.json and the tokenizer files
(lm_jax/data/hf_format.py). Two architectures express a Transformer of
lm_jax exactly (lm_jax/models/transformer.py, recipe.py):

  GPT2LMHeadModel   learned positions, LayerNorm, GELU (tanh or erf)
  LlamaForCausalLM  rotary positions, RMSNorm, SwiGLU, with biases on
                    q, k, v, o and the MLP (attention_bias, mlp_bias)

Both with epsilon 1e-6 (Flax's), heads of d_model / num_heads, a tied or
untied head. Any other recipe is refused, naming the option with no
counterpart (QK-norm is Qwen3's, but Qwen3's MLP has no biases, and
lm_jax's has). Reading is the inverse, for either architecture: a Llama
without biases gets zero biases (the same function).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from lm_jax import outputs
from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.models import recipe
from lm_jax.models.transformer import stack_layers, unstack_layers

EPS = 1e-6  # Flax's LayerNorm and RMSNorm (recipe.norm)
WEIGHTS = "model.safetensors"
# The settings read from a checkpoint; the rest of config.model (dtype,
# attention, scan_layers, remat, dropout) say how to compute, the user's.
MODEL_SETTINGS = ("num_layers", "num_heads", "d_model", "max_len",
                  "tie_embeddings", "gelu_approximate", "position", "norm",
                  "qk_norm", "mlp", "logit_softcap")
FIX = "export a run of a config that maps, e.g. --config=char_tf:hf (Llama)"


def architecture(model: ml_collections.ConfigDict) -> str:
  """"llama" or "gpt2": the architecture that computes what `model` does;
  a UserError naming the first option that has no counterpart."""
  if model.kind != "transformer":
    raise UserError(
        f"config.model.kind={model.kind!r} has no counterpart in "
        "transformers: --format=hf exports causal Transformers (GPT-2 or "
        "Llama layouts); export this run with --format=safetensors")
  if model.logit_softcap:
    raise UserError(f"config.model.logit_softcap={model.logit_softcap} has "
                    f"no counterpart in GPT-2 or Llama; {FIX}")
  if model.position == "learned":
    arch, want = "gpt2", dict(norm="layernorm", mlp="gelu", qk_norm=False)
  else:
    arch, want = "llama", dict(norm="rmsnorm", mlp="swiglu", qk_norm=False)
  for name, value in want.items():
    if model[name] != value:
      extra = (" (Qwen3 has QK-norm, but no MLP biases, which lm_jax's MLP "
               "has)" if name == "qk_norm" else "")
      raise UserError(
          f"config.model.{name}={model[name]!r} has no counterpart in "
          f"transformers with config.model.position={model.position!r} "
          f"({'GPT-2' if arch == 'gpt2' else 'Llama'} needs "
          f"{name}={value!r}){extra}; {FIX}")
  return arch


def _t(x) -> np.ndarray:
  """A Flax kernel (in, out) as a PyTorch Linear weight (out, in)."""
  return np.ascontiguousarray(np.asarray(x, np.float32).T)


def _f(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x, np.float32))


def _gpt2_out(model, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
  """GPT-2's config and tensors; its Conv1D weights are (in, out), as
  Flax's kernels."""
  D, L = model.d_model, model.num_layers
  config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_positions": model.max_len, "n_embd": D, "n_layer": L,
            "n_head": model.num_heads, "n_inner": 4 * D,
            "activation_function":
            "gelu_new" if model.gelu_approximate else "gelu",
            "layer_norm_epsilon": EPS, "resid_pdrop": 0.0,
            "embd_pdrop": 0.0, "attn_pdrop": 0.0}
  t = {"transformer.wte.weight": _f(params["embed"]["embedding"]),
       "transformer.wpe.weight": _f(params["pos_embed"]),
       "transformer.ln_f.weight": _f(params["ln_f"]["scale"]),
       "transformer.ln_f.bias": _f(params["ln_f"]["bias"])}
  for i in range(L):
    b, p = f"transformer.h.{i}.", params[f"block_{i}"]
    for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
      t[b + theirs + ".weight"] = _f(p[ours]["scale"])
      t[b + theirs + ".bias"] = _f(p[ours]["bias"])
    for a, c, theirs in (("attn", "qkv", "attn.c_attn"),
                         ("attn", "proj", "attn.c_proj"),
                         ("mlp", "fc", "mlp.c_fc"),
                         ("mlp", "proj", "mlp.c_proj")):
      t[b + theirs + ".weight"] = _f(p[a][c]["kernel"])
      t[b + theirs + ".bias"] = _f(p[a][c]["bias"])
  return config, t


def _llama_out(model, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
  """Llama's config and tensors: the fused q|k|v and gate|value products
  split, each kernel transposed to a Linear's (out, in)."""
  D, H, L = model.d_model, model.num_heads, model.num_layers
  F = recipe.swiglu_hidden(D)
  config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": D, "intermediate_size": F,
            "num_hidden_layers": L, "num_attention_heads": H,
            "num_key_value_heads": H, "head_dim": D // H,
            "hidden_act": "silu", "max_position_embeddings": model.max_len,
            "rms_norm_eps": EPS, "rope_parameters": {
                "rope_type": "default", "rope_theta": recipe.ROPE_BASE},
            "attention_bias": True, "mlp_bias": True,
            "attention_dropout": 0.0}
  t = {"model.embed_tokens.weight": _f(params["embed"]["embedding"]),
       "model.norm.weight": _f(params["ln_f"]["scale"])}
  for i in range(L):
    b, p = f"model.layers.{i}.", params[f"block_{i}"]
    qkv, fc = p["attn"]["qkv"], p["mlp"]["fc"]
    parts = {f"self_attn.{n}_proj": (qkv, j * D, (j + 1) * D)
             for j, n in enumerate("qkv")}
    parts.update({"mlp.gate_proj": (fc, 0, F), "mlp.up_proj": (fc, F, 2 * F)})
    for name, (dense, lo, hi) in parts.items():
      t[b + name + ".weight"] = _t(dense["kernel"][:, lo:hi])
      t[b + name + ".bias"] = _f(dense["bias"][lo:hi])
    for name, dense in (("self_attn.o_proj", p["attn"]["proj"]),
                        ("mlp.down_proj", p["mlp"]["proj"])):
      t[b + name + ".weight"] = _t(dense["kernel"])
      t[b + name + ".bias"] = _f(dense["bias"])
    t[b + "input_layernorm.weight"] = _f(p["ln1"]["scale"])
    t[b + "post_attention_layernorm.weight"] = _f(p["ln2"]["scale"])
  return config, t


def to_hf(model: ml_collections.ConfigDict, vocab_size: int, params: dict,
          special_ids: dict[str, int]) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json, tensors) of an lm_jax Transformer's parameters."""
  arch = architecture(model)
  if model.scan_layers:
    params = unstack_layers(params, model.num_layers)
  config, t = (_gpt2_out if arch == "gpt2" else _llama_out)(model, params)
  config.update({"vocab_size": vocab_size, "tie_word_embeddings":
                 model.tie_embeddings, "torch_dtype": "float32",
                 "bos_token_id": special_ids.get("<bos>"),
                 "eos_token_id": special_ids.get("<eos>"),
                 "pad_token_id": special_ids.get("<pad>")})
  if not model.tie_embeddings:
    t["lm_head.weight"] = _t(params["head"]["kernel"])
  return config, t


def _need(ok: bool, what: str, path) -> None:
  if not ok:
    raise UserError(f"{path} cannot start an lm_jax run: {what}; "
                    "pass a GPT-2 or Llama checkpoint that maps exactly "
                    "(docs/EVALUATION.md, \"In\")")


def _gpt2_in(config: dict, get, path) -> tuple[dict, dict]:
  """GPT-2's settings and parameters, or a UserError naming what differs."""
  D, L = config["n_embd"], config["n_layer"]
  act = config.get("activation_function", "gelu_new")
  _need(act in ("gelu_new", "gelu_pytorch_tanh", "gelu"),
        f"activation_function {act!r} is not GELU", path)
  _need(config.get("n_inner") in (None, 4 * D),
        f"n_inner {config.get('n_inner')} is not 4 x n_embd", path)
  eps = config.get("layer_norm_epsilon", 1e-5)
  _need(math.isclose(eps, EPS), f"layer_norm_epsilon {eps} is not "
        f"{EPS} (Flax's, which lm_jax's norms use)", path)
  _need(not config.get("scale_attn_by_inverse_layer_idx") and
        config.get("scale_attn_weights", True),
        "its attention is scaled otherwise than by 1/sqrt(head size)", path)
  settings = dict(position="learned", norm="layernorm", mlp="gelu",
                  max_len=config["n_positions"],
                  gelu_approximate=act != "gelu", num_layers=L,
                  num_heads=config["n_head"], d_model=D)
  params: dict[str, Any] = {
      "embed": {"embedding": get("transformer.wte.weight")},
      "pos_embed": get("transformer.wpe.weight"),
      "ln_f": {"scale": get("transformer.ln_f.weight"),
               "bias": get("transformer.ln_f.bias")}}
  for i in range(L):
    b = f"transformer.h.{i}."
    pair = lambda n, w: {w: get(b + n + ".weight"),
                         "bias": get(b + n + ".bias")}
    params[f"block_{i}"] = {
        "ln1": pair("ln_1", "scale"), "ln2": pair("ln_2", "scale"),
        "attn": {"qkv": pair("attn.c_attn", "kernel"),
                 "proj": pair("attn.c_proj", "kernel")},
        "mlp": {"fc": pair("mlp.c_fc", "kernel"),
                "proj": pair("mlp.c_proj", "kernel")}}
  return settings, params


def _llama_in(config: dict, get, tensors: dict, path) -> tuple[dict, dict]:
  """Llama's settings and parameters (zero biases where it has none), or
  a UserError naming what lm_jax cannot compute."""
  D, L, H = (config["hidden_size"], config["num_hidden_layers"],
             config["num_attention_heads"])
  F = recipe.swiglu_hidden(D)
  _need(config.get("num_key_value_heads", H) == H,
        f"num_key_value_heads {config.get('num_key_value_heads')} differs "
        f"from num_attention_heads {H} (lm_jax has no grouped-query "
        "attention)", path)
  _need(config.get("head_dim") in (None, D // H),
        f"head_dim {config.get('head_dim')} is not hidden_size / heads", path)
  _need(config.get("hidden_act", "silu") == "silu",
        f"hidden_act {config.get('hidden_act')!r} is not 'silu'", path)
  _need(config["intermediate_size"] == F,
        f"intermediate_size {config['intermediate_size']} is not lm_jax's "
        f"SwiGLU width 8 x hidden_size / 3 = {F}", path)
  rope = config.get("rope_parameters") or {
      "rope_type": "default", "rope_theta": config.get("rope_theta", 1e4),
      **(config.get("rope_scaling") or {})}
  _need(rope.get("rope_type", "default") == "default" and
        rope.get("rope_theta") == recipe.ROPE_BASE,
        f"its rotary embeddings ({rope}) are not plain ones of base "
        f"{recipe.ROPE_BASE:g}", path)
  eps = config.get("rms_norm_eps", 1e-6)
  _need(math.isclose(eps, EPS), f"rms_norm_eps {eps} is not {EPS} "
        "(Flax's, which lm_jax's norms use)", path)
  settings = dict(position="rope", norm="rmsnorm", mlp="swiglu",
                  max_len=config.get("max_position_embeddings", 2048),
                  gelu_approximate=True, num_layers=L, num_heads=H, d_model=D)
  bias = lambda name, n: (get(name) if name in tensors
                          else np.zeros(n, np.float32))

  def dense(names: list[str], width: int) -> dict:
    """Linears side by side as one Flax Dense (in, out)."""
    return {"kernel": np.concatenate([get(n + ".weight").T for n in names],
                                     axis=1),
            "bias": np.concatenate([bias(n + ".bias", width) for n in names])}

  params = {"embed": {"embedding": get("model.embed_tokens.weight")},
            "ln_f": {"scale": get("model.norm.weight")}}
  for i in range(L):
    b = f"model.layers.{i}."
    params[f"block_{i}"] = {
        "ln1": {"scale": get(b + "input_layernorm.weight")},
        "ln2": {"scale": get(b + "post_attention_layernorm.weight")},
        "attn": {"qkv": dense([b + f"self_attn.{n}_proj" for n in "qkv"], D),
                 "proj": dense([b + "self_attn.o_proj"], D)},
        "mlp": {"fc": dense([b + "mlp.gate_proj", b + "mlp.up_proj"], F),
                "proj": dense([b + "mlp.down_proj"], D)}}
  return settings, params


def from_hf(config: dict, tensors: dict[str, np.ndarray], path="checkpoint"
            ) -> tuple[dict, dict]:
  """(model settings, Flax parameters) of a config.json and its tensors;
  a UserError naming the first setting lm_jax cannot compute."""
  arch = (config.get("architectures") or ["?"])[0]
  _need(arch in ("LlamaForCausalLM", "GPT2LMHeadModel"),
        f"its architecture {arch} is neither LlamaForCausalLM nor "
        "GPT2LMHeadModel", path)
  get = lambda name: np.asarray(tensors[name], np.float32)
  if arch == "GPT2LMHeadModel":
    settings, params = _gpt2_in(config, get, path)
  else:
    settings, params = _llama_in(config, get, tensors, path)
  tied = config.get("tie_word_embeddings", arch == "GPT2LMHeadModel")
  if not tied:
    _need("lm_head.weight" in tensors,
          "it has no lm_head.weight and does not tie it", path)
    params["head"] = {"kernel": get("lm_head.weight").T}
  settings.update(tie_embeddings=tied, qk_norm=False, logit_softcap=0.0)
  return settings, params


def special_ids(tokenizer) -> dict[str, int]:
  """The ids of the special tokens the vocabulary holds, by spelling."""
  return {t: i for i, t in enumerate(tokenizer.vocab)
          if t in ("<unk>", "<pad>", "<bos>", "<eos>", "<mask>")}


def export_hf(run, out: pathlib.Path) -> str:
  """Writes the loaded `run` (rundir.Run) into the new folder `out` as a
  Hugging Face checkpoint; returns its architecture's class name."""
  from safetensors.numpy import save_file

  from lm_jax.runs import rundir
  ids = special_ids(run.tokenizer)
  config, tensors = to_hf(run.config.model, run.tokenizer.vocab_size,
                          run.params, ids)
  generation = {k: config[k] for k in
                ("bos_token_id", "eos_token_id", "pad_token_id")
                if config[k] is not None}
  generation["max_length"] = run.config.model.max_len
  out.mkdir(parents=True, exist_ok=True)
  for name, data in (("config.json", config),
                     ("generation_config.json", generation)):
    (out / name).write_text(json.dumps(data, indent=1) + "\n")
  save_file(tensors, str(out / WEIGHTS), {"format": "pt"})
  rundir.write_tokenizer(out, run.tokenizer)
  return config["architectures"][0]


def export_hf_run(workdir: str | os.PathLike, out: str | os.PathLike,
                  step: int | None = None, force: bool = False
                  ) -> tuple[int, str]:
  """Writes a run's checkpoint as a Hugging Face folder `out`
  (`export_hf`); returns the step and the architecture.

  `out` must be new or empty (or, with `force`, is replaced), outside any
  run directory; the folder is written beside it and renamed, whole.
  """
  import shutil

  from lm_jax.runs import modelfile, rundir
  text = os.fspath(out)
  if not text.strip():
    raise UserError("--out is empty: name the folder to write, e.g. "
                    "--out=hf_model")
  target = pathlib.Path(text)
  # (an earlier export, config.json and tokenizer.json, is not a run)
  run = modelfile.inside_run(target) or (
      target if (target / rundir.CHECKPOINTS).exists() else None)
  if run is not None:
    raise UserError(f"--out={out} is inside the run directory {run}, whose "
                    "files it could replace; name a folder outside it, e.g. "
                    f"--out={target.name}_hf")
  if target.exists() and not target.is_dir():
    raise UserError(f"--out={out} is a file; --format=hf writes a folder: "
                    "name a new one")
  if target.is_dir() and any(target.iterdir()) and not force:
    raise UserError(f"--out={out} is a folder that is not empty; pass "
                    "--force to replace it, or name a new folder")
  outputs.check_target(target / "config.json", make_folder=True)
  stored = pathlib.Path(workdir) / rundir.CONFIG_FILE
  if stored.is_file():  # refused before the checkpoint is read
    architecture(ml_collections.ConfigDict(
        rundir.read_config(pathlib.Path(workdir))).model)
  loaded = rundir.load_run(workdir, step)
  tmp = target.with_name(target.name + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    arch = export_hf(loaded, tmp)
    if target.exists():
      shutil.rmtree(target)
    os.replace(tmp, target)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise UserError(f"cannot write --out={out}: {e.strerror or e}; name a "
                    "writable folder") from None
  return loaded.step, arch


class Checkpoint(NamedTuple):
  """What `--config.init_from` starts a run from."""
  settings: dict  # config.model fields (MODEL_SETTINGS)
  tokenizer: Any
  params: dict  # unscanned Flax parameters, numpy


def read(path: str | os.PathLike) -> Checkpoint:
  """A Hugging Face directory (GPT-2 or Llama), or a file lm-jax-export
  wrote; UserError naming what is missing or has no counterpart."""
  from safetensors import safe_open

  from lm_jax.runs import modelfile, rundir
  path = pathlib.Path(path)
  if path.is_file():
    run = modelfile.load_model(path)
    _need(run.config.model.kind == "transformer",
          f"its model is config.model.kind={run.config.model.kind!r}; "
          "init_from starts Transformers", path)
    params = run.params
    if run.config.model.scan_layers:
      params = unstack_layers(params, run.config.model.num_layers)
    return Checkpoint({k: run.config.model[k] for k in MODEL_SETTINGS},
                      run.tokenizer, params)
  if not (path / "config.json").is_file() or not (path / WEIGHTS).is_file():
    raise UserError(f"config.init_from={str(path)!r} is neither a model file "
                    f"lm-jax-export wrote nor a folder with config.json and "
                    f"{WEIGHTS}; pass one")
  try:
    config = json.loads((path / "config.json").read_text())
    with safe_open(path / WEIGHTS, framework="np") as f:
      tensors = {name: f.get_tensor(name) for name in f.keys()}
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}; pass a "
                    "whole checkpoint folder") from None
  if not (path / rundir.TOKENIZER_FILE).is_file():
    raise UserError(f"{path} has no {rundir.TOKENIZER_FILE}; add the "
                    "tokenizer the model was trained with")
  try:
    tokenizer = tokenizers.load_tokenizer(path / rundir.TOKENIZER_FILE)
  except (ValueError, KeyError, TypeError, AttributeError):
    raise UserError(
        f"{path / rundir.TOKENIZER_FILE} is not a vocabulary lm_jax reads "
        "(characters, words, or a byte-level BPE whose first ids are "
        "<unk> <pad> <bos> <eos> <mask>)") from None
  try:
    settings, params = from_hf(config, tensors, path)
  except KeyError as e:
    raise UserError(f"{path} cannot start an lm_jax run: it lacks {e}; "
                    "pass a whole checkpoint") from None
  vocab = params["embed"]["embedding"].shape[0]
  _need(vocab == tokenizer.vocab_size, f"its embeddings hold {vocab} tokens "
        f"and its tokenizer {tokenizer.vocab_size}", path)
  return Checkpoint(settings, tokenizer, params)


def apply(config: ml_collections.ConfigDict) -> Checkpoint | None:
  """Reads `config.init_from` (None if empty) and sets config.model's
  settings and config.data's tokenizer from it."""
  if not config.get("init_from"):
    return None
  if config.model.kind != "transformer":
    raise UserError(f"config.init_from starts a Transformer, and "
                    f"config.model.kind is {config.model.kind!r}; use "
                    "--config=char_tf (the architecture comes from the "
                    "checkpoint)")
  checkpoint = read(config.init_from)
  config.model.update(checkpoint.settings)
  config.data.tokenizer = checkpoint.tokenizer.kind
  config.data.vocab_from = str(config.init_from)
  return checkpoint


def initial_params(checkpoint: Checkpoint, model: ml_collections.ConfigDict
                   ) -> dict:
  """The checkpoint's parameters as `model` holds them (stacked layers
  with scan_layers), float32 arrays."""
  import jax
  import jax.numpy as jnp
  params = checkpoint.params
  if model.scan_layers:
    params = stack_layers(params, model.num_layers)
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
