"""The model summary printed when training starts: sizes, FLOPs, memory.

Parameters per module come from the parameter tree. FLOPs and activation
memory are the model's own estimates from formulas
(`LanguageModel.train_flops_per_token`, `LanguageModel.activation_bytes`);
for the Transformer both are within 10% (FLOPs) and 50% (memory) of what
XLA reports for the compiled step (tests/views/test_plotting_and_internals.py checks this).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TypedDict

import ml_collections

from lm_jax.errors import UserError
from lm_jax.models.base import count

BYTES = 4  # float32 parameters, optimiser state and activations


def params_by_module(params: Mapping) -> dict[str, int]:
  """Parameter counts per module; layers 0..L-1 share one row (`block_*`).

  A top-level module made of submodules (a Transformer block) is split into
  them: `block_*/attn`, `block_*/mlp`, ...
  """
  rows: dict[str, int] = {}
  for top, sub in params.items():
    parts = ([(f"/{k}", v) for k, v in sub.items()]
             if isinstance(sub, Mapping)
             and any(isinstance(v, Mapping) for v in sub.values())
             else [("", sub)])
    for child, tree in parts:
      name = re.sub(r"_\d+$", "_*", top) + child
      rows[name] = rows.get(name, 0) + count(tree)
  return rows


class Memory(TypedDict):
  """Bytes of each part of training's memory (`memory_bytes`)."""
  params: int
  grads: int
  adam: int
  activations: int | None  # None: the model has no estimate


def memory_bytes(model, params: Mapping, batch_size: int, seq_len: int
                 ) -> Memory:
  """Rough training memory in bytes: params, grads, Adam, activations.

  Parameters, gradients and Adam's two moments are 4 float32 copies of N;
  the activations are the model's own estimate
  (`LanguageModel.activation_bytes`), None where it has none.
  """
  n = count(params)
  return Memory(params=n * BYTES, grads=n * BYTES, adam=2 * n * BYTES,
                activations=model.activation_bytes(batch_size, seq_len))


def _mib(n: int) -> str:
  return f"{n / 2**20:,.1f} MiB"


def model_summary(model, params: Mapping,
                  train: ml_collections.ConfigDict) -> str:
  """A few lines: the per-module table, FLOPs per token, memory."""
  t = train
  total = count(params)
  lines = [f"model: {model.kind}, {total:,} params"]
  rows = params_by_module(params)
  width = max(len(name) for name in rows)
  for name, n in rows.items():
    lines.append(f"  {name:<{width}} {n:>12,} {n / total:>6.1%}")
  flops = model.train_flops_per_token(params, t.seq_len)
  lines.append(f"train FLOPs/token (fwd+bwd, {model.flops_formula}): "
               f"{flops / 1e6:,.2f} M"
               f" = {flops * t.batch_size * t.seq_len / 1e9:,.2f} GFLOP/step")
  mem = memory_bytes(model, params, t.batch_size, t.seq_len)
  fixed = mem["params"] + mem["grads"] + mem["adam"]
  acts = ("not estimated" if mem["activations"] is None
          else _mib(mem["activations"]))
  lines.append(f"memory (rough): params+grads+Adam {_mib(fixed)}, "
               f"activations {acts} at batch {t.batch_size} x {t.seq_len}")
  return "\n".join(lines)


def machine_bytes() -> tuple[int, str] | None:
  """(bytes, what) one device may use: an accelerator's own memory, or on
  CPU the machine's (its cgroup limit if lower) shared by its devices."""
  import jax
  device = jax.local_devices()[0]
  if device.platform != "cpu":
    limit = (device.memory_stats() or {}).get("bytes_limit")
    return (int(limit), f"{device.device_kind}'s memory") if limit else None
  try:
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError):
    return None
  try:
    with open("/sys/fs/cgroup/memory.max") as f:
      total = min(total, int(f.read()))
  except (OSError, ValueError):  # no cgroup v2 limit ("max")
    pass
  return total // jax.local_device_count(), (
      "this machine's memory" + (f" / {jax.local_device_count()} devices"
                                 if jax.local_device_count() > 1 else ""))


def check_fits(model, train: ml_collections.ConfigDict) -> None:
  """Refuses a run whose rough training memory per device exceeds the
  device's, before anything is written: parameters, gradients and Adam's
  moments (sharded with FSDP, else on every device) plus activations of
  the device's share of a micro-batch (`memory_bytes`)."""
  import jax
  have = machine_bytes()
  if have is None:
    return
  n = jax.local_device_count()
  micro = max(1, train.batch_size // train.grad_accum_steps)
  mem = memory_bytes(model, model.abstract_params(train.seq_len), micro,
                     train.seq_len)
  fixed = mem["params"] + mem["grads"] + mem["adam"]
  acts = mem["activations"] or 0
  need = fixed // (n if train.fsdp else 1) + acts // n
  if need <= have[0]:
    return
  raise UserError(
      f"this run needs about {_gib(need)} per device to train (params+grads"
      f"+Adam {_gib(fixed)}, activations {_gib(acts)} at batch "
      f"{train.batch_size} x {train.seq_len}), more than {have[1]} "
      f"({_gib(have[0])}); lower config.model.d_model or num_layers, or "
      "config.train.batch_size or seq_len")


def _gib(n: int) -> str:
  return f"{n / 2**30:,.1f} GiB"
