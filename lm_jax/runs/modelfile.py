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
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lm_jax import outputs
from lm_jax.errors import UserError

if TYPE_CHECKING:  # annotations only: JAX loads where it is used
  import jax

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


def unflatten(tensors: Mapping[str, np.ndarray | jax.Array]) -> dict:
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


def inside_run(path: pathlib.Path) -> pathlib.Path | None:
  """The run directory `path` would be written into, or None."""
  from lm_jax.runs import rundir
  for folder in (path.absolute().parent, *path.absolute().parent.parents):
    if (folder / rundir.CONFIG_FILE).is_file() and any(
        (folder / name).exists()
        for name in (rundir.TOKENIZER_FILE, rundir.CHECKPOINTS)):
      return folder
  return None


def export_run(workdir: str | os.PathLike, out: str | os.PathLike,
               step: int | None = None, force: bool = False) -> int:
  """Writes a run's checkpoint (best, or `step`) to `out`; returns the step.

  `out` must be a new regular file (or, with `force`, an existing one)
  outside any run directory: the file is written beside it and renamed
  (`lm_jax.outputs`), so the old file stays until the new one is whole.
  """
  from lm_jax.runs import rundir
  target = outputs.check_target(out)
  run = inside_run(target)
  if run is not None:
    raise UserError(f"--out={out} is inside the run directory {run}, whose "
                    "files it could replace; name a file outside it, e.g. "
                    f"--out={target.name}")
  outputs.check_target(out, replace=force)
  config, tokenizer, _, params, step = rundir.load_run(workdir, step)
  metadata = {"format": FORMAT, "step": str(step),
              "config": config.to_json(),
              "tokenizer": json.dumps(tokenizer.to_json(), ensure_ascii=False)}
  tensors = flatten(params)
  outputs.write_replacing(target, lambda p: save_file(tensors, p, metadata),
                          errors=(SafetensorError,))
  return step


# Sizes a model file may ask for: far beyond any model this code trains on
# one machine, and small enough that building the model cannot exhaust it.
MAX_LAYERS = 1024
MAX_SIZE = 2**16  # widths, heads, context lengths, tiles


class _Invalid(Exception):
  """What is wrong with a model file (load_model adds the path and fix)."""


def _json_object(metadata: dict, key: str) -> dict:
  if key not in metadata:
    raise _Invalid(f"its metadata has no {key!r}")
  try:
    value = json.loads(metadata[key])
  except ValueError:
    raise _Invalid(f"its metadata's {key!r} is not JSON") from None
  if not isinstance(value, dict):
    raise _Invalid(f"its metadata's {key!r} is not a JSON object")
  return value


def _check_sizes(model: dict) -> None:
  """Every integer setting of config.model within (0, MAX_SIZE]."""
  for name, value in model.items():
    if isinstance(value, bool) or not isinstance(value, int):
      continue
    bound = MAX_LAYERS if name == "num_layers" else MAX_SIZE
    if not 0 < value <= bound:
      raise _Invalid(f"config.model.{name}={value} is outside (0, {bound}]")


def _check_tensors(shapes: dict[str, tuple], abstract: dict,
                   vocab_size: int) -> None:
  """The file's tensor names and shapes against the model's parameters."""
  want = {n: tuple(a.shape) for n, a in flatten_abstract(abstract).items()}
  missing = sorted(set(want) - set(shapes))
  extra = sorted(set(shapes) - set(want))
  if missing:
    raise _Invalid(f"tensor {missing[0]} is missing"
                   + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
  if extra:
    raise _Invalid(f"tensor {extra[0]} is not a parameter of its model")
  wrong = [n for n in sorted(want) if shapes[n] != want[n]]
  for name in wrong:
    got, need = shapes[name], want[name]
    if len(got) == len(need):
      vocab = [g for g, w in zip(got, need) if g != w and w == vocab_size]
      if vocab and all(g == w or w == vocab_size for g, w in zip(got, need)):
        raise _Invalid(f"its tokenizer has {vocab_size} tokens but tensor "
                       f"{name} is {got}, made for {vocab[0]} tokens")
    raise _Invalid(f"tensor {name} has shape {got}; its config makes {need}")


def flatten_abstract(tree, prefix: str = "") -> dict:
  """`flatten` of a tree of `jax.ShapeDtypeStruct` (no arrays made)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten_abstract(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def _validated(path, f) -> tuple:
  """(config, tokenizer, model, step) of an open safetensors file `f`,
  every check done before a tensor is read."""
  from lm_jax.data import tokenizers
  from lm_jax.models import check_config, make_model
  metadata = f.metadata() or {}
  if metadata.get("format") != FORMAT:
    raise _Invalid("it holds no lm_jax config and tokenizer in its metadata")
  config = _json_object(metadata, "config")
  model = config.get("model")
  if not isinstance(model, dict) or not isinstance(config.get("train"), dict):
    raise _Invalid("its config has no 'model' and 'train' settings")
  step = metadata.get("step", "")
  if not step.isdigit():
    raise _Invalid(f"its step {step!r} is not a whole number")
  _check_sizes(model)
  data = _json_object(metadata, "tokenizer")
  try:
    kind = tokenizers.kind_of(data)
  except (KeyError, AttributeError, TypeError):
    kind = None
  if kind not in tokenizers.TOKENIZERS:
    raise _Invalid(f"its tokenizer kind {kind!r} is none of "
                   f"{sorted(tokenizers.TOKENIZERS)}")
  try:
    tokenizer = tokenizers.TOKENIZERS[kind].from_json(data)
  except (KeyError, TypeError, ValueError, AttributeError):
    raise _Invalid(f"its {kind} tokenizer is damaged") from None
  config = ml_collections.ConfigDict(config)
  try:
    check_config(config.model, config.train)
    built = make_model(config.model, tokenizer.vocab_size)
    abstract = built.abstract_params()
  except UserError as e:  # its first clause: the fix is to re-export
    raise _Invalid(f"its config cannot build a model "
                   f"({str(e).split('; ')[0]})") from None
  except Exception as e:  # a wrong type or value deep inside the model
    raise _Invalid(f"its config cannot build a model ({type(e).__name__}: "
                   f"{e})".splitlines()[0]) from None
  shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
  _check_tensors(shapes, abstract, tokenizer.vocab_size)
  return config, tokenizer, built, int(step), abstract


def load_model(path: str | os.PathLike):
  """The `lm_jax.runs.rundir.Run` of a file `export_run` wrote, as `load_run`
  gives it from the run directory.

  The file is checked before its tensors are read: metadata (config,
  tokenizer, step), sizes within MAX_LAYERS and MAX_SIZE, each tensor's
  name and shape against the model its config builds; then the weights'
  dtypes and finiteness. Any failure is a UserError naming it.
  """
  import jax.numpy as jnp

  from lm_jax.runs import rundir
  fix = "export the run again with lm-jax-export, or pass another --model"
  try:
    with safe_open(path, framework="np") as f:
      config, tokenizer, model, step, abstract = _validated(path, f)
      tensors = {name: f.get_tensor(name) for name in f.keys()}
  except (OSError, SafetensorError) as e:
    raise UserError(f"cannot read {path} as a safetensors file ("
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                    f"); pass a file lm-jax-export wrote") from None
  except _Invalid as e:
    raise UserError(f"{path} is not a usable model file: {e}; {fix}") from None
  want = flatten_abstract(abstract)
  for name, value in sorted(tensors.items()):
    if value.dtype != want[name].dtype:
      raise UserError(f"{path} is not a usable model file: tensor {name} is "
                      f"{value.dtype}, the model takes {want[name].dtype}; "
                      f"{fix}")
    if not np.isfinite(value).all():
      raise UserError(f"{path} is not a usable model file: tensor {name} "
                      f"holds NaN or infinite weights; {fix}")
  params = unflatten({n: jnp.asarray(t) for n, t in tensors.items()})
  return rundir.Run(config, tokenizer, model, params, step)
