"""A trained model in one file, and back (`lm-jax-export` is the command).

The parameters of a run's best checkpoint (or `--step`'s) in the
safetensors format (https://huggingface.co/docs/safetensors), written and
read by the `safetensors` package, with the run's config and tokenizer as
JSON in its metadata: any safetensors reader loads the weights, and
`load_model` (`lm-jax-sample --model=FILE`) rebuilds the model that samples
exactly as the run directory does. Tensors are named by their Flax
parameter paths joined by "/", e.g. "block_0/attn/qkv/kernel".
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

FORMAT = "lm_jax"  # metadata["format"]: a file this module wrote


def flatten(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """{"block_0/attn/qkv/kernel": array}: Flax parameter paths joined by /."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = np.asarray(value)
  return out


def unflatten(tensors: dict[str, np.ndarray]) -> dict:
  params: dict = {}
  for name, value in tensors.items():
    *path, leaf = name.split("/")
    node = params
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = value
  return params


def read_safetensors(path: str | os.PathLike
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(tensors, metadata) of a safetensors file."""
  with safe_open(path, framework="np") as f:
    return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


def export_run(workdir: str | os.PathLike, out: str | os.PathLike,
               step: int | None = None) -> int:
  """Writes a run's checkpoint (best, or `step`) to `out`; returns the step."""
  from lm_jax.runs import rundir
  config, tokenizer, _, params, step = rundir.load_run(workdir, step)
  metadata = {"format": FORMAT, "step": str(step),
              "config": config.to_json(),
              "tokenizer": json.dumps(tokenizer.to_json(), ensure_ascii=False)}
  save_file(flatten(params), out, metadata)
  return step


def load_model(path: str | os.PathLike):
  """The `lm_jax.runs.rundir.Run` of a file `export_run` wrote, as `load_run`
  gives it from the run directory."""
  import jax.numpy as jnp

  from lm_jax.data import tokenizers
  from lm_jax.errors import UserError
  from lm_jax.models import make_model
  from lm_jax.runs import rundir
  try:
    tensors, metadata = read_safetensors(path)
  except (OSError, SafetensorError) as e:
    raise UserError(f"cannot read {path} as a safetensors file ({e}); pass "
                    "a file lm-jax-export wrote") from None
  if metadata.get("format") != FORMAT:
    raise UserError(f"{path} holds no lm_jax config and tokenizer in its "
                    "metadata; pass a file lm-jax-export wrote")
  config = ml_collections.ConfigDict(json.loads(metadata["config"]))
  data = json.loads(metadata["tokenizer"])
  tokenizer = tokenizers.tokenizer_from_json(data)
  model = make_model(config.model, tokenizer.vocab_size)
  params = unflatten({n: jnp.asarray(t) for n, t in tensors.items()})
  return rundir.Run(config, tokenizer, model, params, int(metadata["step"]))
