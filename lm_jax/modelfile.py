"""A trained model in one file, and back (`lm_jax.export` is the command).

The parameters of a run's best checkpoint (or `--step`'s) in the
safetensors format (https://huggingface.co/docs/safetensors), the run's
config and tokenizer as JSON in its metadata: any safetensors reader loads
the weights, and `load_model` (`lm-jax-sample --model=FILE`) rebuilds the
model that samples exactly as the run directory does. The format is small
enough to write here with NumPy (an 8-byte header size, a JSON header,
the raw little-endian tensors), so it adds no dependency;
tests/test_modelfile.py checks it against the `safetensors` package where
that is installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct

import ml_collections
import numpy as np

FORMAT = "lm_jax"  # metadata["format"]: a file this module wrote
DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32,
          "I64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


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


def write_safetensors(path: str | os.PathLike,
                      tensors: dict[str, np.ndarray],
                      metadata: dict[str, str]) -> None:
  """Tensors in name order, the header padded to 8 bytes as the spec asks."""
  header, offset = {"__metadata__": metadata}, 0
  arrays = {n: np.ascontiguousarray(t, t.dtype.newbyteorder("<"))
            for n, t in sorted(tensors.items())}
  for name, array in arrays.items():
    header[name] = {"dtype": NAMES[array.dtype.newbyteorder("=")],
                    "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    offset += array.nbytes
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for array in arrays.values():
      f.write(array.tobytes())


def read_safetensors(path: str | os.PathLike
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(tensors, metadata) of a safetensors file."""
  blob = pathlib.Path(path).read_bytes()
  (size,) = struct.unpack("<Q", blob[:8])
  header = json.loads(blob[8:8 + size])
  metadata = header.pop("__metadata__", {})
  start = 8 + size
  tensors = {}
  for name, entry in header.items():
    begin, end = entry["data_offsets"]
    dtype = np.dtype(DTYPES[entry["dtype"]])
    raw = np.frombuffer(blob[start + begin:start + end],
                        dtype.newbyteorder("<"))
    tensors[name] = raw.astype(dtype).reshape(entry["shape"])
  return tensors, metadata


def export_run(workdir: str | os.PathLike, out: str | os.PathLike,
               step: int | None = None) -> int:
  """Writes a run's checkpoint (best, or `step`) to `out`; returns the step."""
  from lm_jax import rundir
  config, tokenizer, _, params, step = rundir.load_run(workdir, step)
  metadata = {"format": FORMAT, "step": str(step),
              "config": config.to_json(),
              "tokenizer": json.dumps(tokenizer.to_json(), ensure_ascii=False)}
  write_safetensors(out, flatten(params), metadata)
  return step


def load_model(path: str | os.PathLike):
  """The `lm_jax.rundir.Run` of a file `export_run` wrote, as `load_run`
  gives it from the run directory."""
  import jax.numpy as jnp

  from lm_jax import rundir, tokenizers
  from lm_jax.errors import UserError
  from lm_jax.models import make_model
  try:
    tensors, metadata = read_safetensors(path)
  except (OSError, ValueError, KeyError, struct.error) as e:
    raise UserError(f"cannot read {path} as a safetensors file ({e}); pass "
                    "a file lm-jax-export wrote") from None
  if metadata.get("format") != FORMAT:
    raise UserError(f"{path} holds no lm_jax config and tokenizer in its "
                    "metadata; pass a file lm-jax-export wrote")
  config = ml_collections.ConfigDict(json.loads(metadata["config"]))
  data = json.loads(metadata["tokenizer"])
  tokenizer = tokenizers.TOKENIZERS[data["kind"]].from_json(data)
  model = make_model(config.model, tokenizer.vocab_size)
  params = unflatten({n: jnp.asarray(t) for n, t in tensors.items()})
  return rundir.Run(config, tokenizer, model, params, int(metadata["step"]))
