"""The model summary printed when training starts: sizes, FLOPs, memory.

Parameters per module come from the parameter tree. FLOPs and memory are
estimates from formulas, documented on the functions below; for the
Transformer both are within 10% (FLOPs) and 50% (memory) of what XLA
reports for the compiled step (tests/test_viz.py checks this).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import ml_collections

BYTES = 4  # float32 parameters, optimiser state and activations


def count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


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


def _lookup_params(model: ml_collections.ConfigDict, params: Mapping) -> int:
  """Parameters read by indexing, not multiplied: position and (untied)
  token embedding tables."""
  n = count(params.get("pos_embed", {}))
  if not model.get("tie_embeddings", False):
    n += count(params.get("embed", {}))
  return n


def train_flops_per_token(model: ml_collections.ConfigDict, params: Mapping,
                          seq_len: int) -> float:
  """Forward + backward FLOPs per token: 6 N + 12 L T D.

  N counts the parameters used in matrix products (all but lookup tables;
  a tied embedding counts, it is the output head). Each does a multiply and
  an add per token forward (2 N) and twice that backward (4 N). Attention
  adds, per layer, q.k scores and the weighted sum of values over T
  positions: 2 x 2 T D forward, x 3 with the backward pass (the causal mask
  is applied to full T x T scores, so nothing is halved). Kaplan et al.
  2020, section 2.1; nanoGPT's `estimate_mfu`. Norms, softmax and GELU are
  left out (a few percent).
  """
  n = count(params) - _lookup_params(model, params)
  attention = (12 * model.num_layers * seq_len * model.d_model
               if "num_heads" in model else 0)
  return 6 * n + attention


def memory_bytes(model: ml_collections.ConfigDict, params: Mapping,
                 batch_size: int, seq_len: int, vocab_size: int
                 ) -> dict[str, int | None]:
  """Rough training memory in bytes: params, grads, Adam, activations.

  Parameters, gradients and Adam's two moments are 4 float32 copies of N.
  Activations kept for the backward pass, per token and Transformer layer:
  the block input, two LayerNorm outputs, q/k/v (3 D), the attention output
  and the residual after attention (D each), the MLP's hidden layer before
  and after GELU (4 D each): 16 D; plus scores and weights (2 H T). Then 2 V
  for the logits and their softmax. `activations` is None for other models.
  """
  n = count(params)
  acts = None
  if "num_heads" in model:
    per_token = (model.num_layers * (16 * model.d_model
                                     + 2 * model.num_heads * seq_len)
                 + 2 * vocab_size)
    acts = batch_size * seq_len * per_token * BYTES
  return dict(params=n * BYTES, grads=n * BYTES, adam=2 * n * BYTES,
              activations=acts)


def _mib(n: int) -> str:
  return f"{n / 2**20:,.1f} MiB"


def model_summary(config: ml_collections.ConfigDict, params: Mapping,
                  vocab_size: int) -> str:
  """A few lines: the per-module table, FLOPs per token, memory."""
  m, t = config.model, config.train
  total = count(params)
  lines = [f"model: {m.kind}, {total:,} params"]
  rows = params_by_module(params)
  width = max(len(name) for name in rows)
  for name, n in rows.items():
    lines.append(f"  {name:<{width}} {n:>12,} {n / total:>6.1%}")
  flops = train_flops_per_token(m, params, t.seq_len)
  formula = "6N + 12LTD" if "num_heads" in m else "6N"
  lines.append(f"train FLOPs/token (fwd+bwd, {formula}): {flops / 1e6:,.2f} M"
               f" = {flops * t.batch_size * t.seq_len / 1e9:,.2f} GFLOP/step")
  mem = memory_bytes(m, params, t.batch_size, t.seq_len, vocab_size)
  fixed = mem["params"] + mem["grads"] + mem["adam"]
  acts = ("not estimated" if mem["activations"] is None
          else _mib(mem["activations"]))
  lines.append(f"memory (rough): params+grads+Adam {_mib(fixed)}, "
               f"activations {acts} at batch {t.batch_size} x {t.seq_len}")
  return "\n".join(lines)
