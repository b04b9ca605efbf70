"""PyTorch twins of the lm_jax models, and converters from Flax parameters.

`TorchTransformerLM` computes the same function as
`lm_jax.models.transformer.TransformerLM`: learned positions, pre-LayerNorm
blocks, one fused qkv projection with bias, tanh or erf GELU, a head tied to
the token embedding, dropout at the same places and the same initialisation
(normal 0.02, GPT-2's 0.02 / sqrt(2 L) for projections into the residual
stream, zero biases). `transformer_params_from_flax` copies Flax parameters
into it, so both frameworks can be checked on the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Flax's LayerNorm default; torch's is 1e-5.
LAYER_NORM_EPS = 1e-6


class CausalSelfAttention(nn.Module):
  """Multi-head self-attention where position t sees positions <= t."""

  def __init__(self, d_model: int, num_heads: int, dropout: float):
    super().__init__()
    self.num_heads, self.dropout = num_heads, dropout
    self.qkv = nn.Linear(d_model, 3 * d_model)
    self.proj = nn.Linear(d_model, d_model)

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    B, T, D = x.shape
    H, K = self.num_heads, D // self.num_heads
    # Same layout as the Flax model: qkv features are [q | k | v], each H x K.
    q, k, v = self.qkv(x).view(B, T, 3, H, K).permute(2, 0, 3, 1, 4)  # (B, H, T, K)
    # PyTorch's fused kernel: the fastest eager path, the same math.
    y = F.scaled_dot_product_attention(
        q, k, v, is_causal=True,
        dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, K)
    return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
  """Position-wise feed-forward network, 4x wider inside, GELU."""

  def __init__(self, d_model: int, gelu_approximate: bool):
    super().__init__()
    self.fc = nn.Linear(d_model, 4 * d_model)
    self.proj = nn.Linear(4 * d_model, d_model)
    self.approximate = "tanh" if gelu_approximate else "none"

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class Block(nn.Module):
  """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x))."""

  def __init__(self, d_model: int, num_heads: int, dropout: float,
               gelu_approximate: bool):
    super().__init__()
    self.ln1 = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
    self.attn = CausalSelfAttention(d_model, num_heads, dropout)
    self.ln2 = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
    self.mlp = MLP(d_model, gelu_approximate)
    self.drop = nn.Dropout(dropout)

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    x = x + self.drop(self.attn(self.ln1(x)))
    return x + self.drop(self.mlp(self.ln2(x)))


class TorchTransformerLM(nn.Module):
  """Token + learned position embeddings, N blocks, LayerNorm, output head.

  Takes the same fields as `TransformerLM` (`scan_layers`, `dtype` and the
  attention choice are accepted and ignored: bf16 products come from
  `torch.autocast`, and attention is always PyTorch's fused kernel).
  """

  def __init__(self, vocab_size: int, num_layers: int = 4, num_heads: int = 4,
               d_model: int = 128, max_len: int = 256, dropout: float = 0.0,
               tie_embeddings: bool = True, scan_layers: bool = False,
               dtype: str = "float32", gelu_approximate: bool = True,
               attention: str = "dense", attention_tile: int = 64):
    super().__init__()
    del scan_layers, dtype, attention, attention_tile
    self.embed = nn.Embedding(vocab_size, d_model)
    self.pos_embed = nn.Parameter(torch.zeros(max_len, d_model))
    self.drop = nn.Dropout(dropout)
    self.blocks = nn.ModuleList(
        Block(d_model, num_heads, dropout, gelu_approximate)
        for _ in range(num_layers))
    self.ln_f = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
    self.head = (None if tie_embeddings
                 else nn.Linear(d_model, vocab_size, bias=False))
    self._init_weights(0.02 / math.sqrt(2 * num_layers))

  @torch.no_grad()
  def _init_weights(self, residual_std: float) -> None:
    for name, p in self.named_parameters():
      if name.endswith("bias"):
        p.zero_()
      elif ".ln" in name or name.startswith("ln_f"):
        p.fill_(1.0)  # LayerNorm scales
      else:
        std = residual_std if name.endswith("proj.weight") else 0.02
        p.normal_(0.0, std)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int
    T = tokens.shape[1]
    x = self.drop(self.embed(tokens) + self.pos_embed[:T])  # (B, T, D)
    for block in self.blocks:
      x = block(x)
    x = self.ln_f(x)
    w = self.embed.weight if self.head is None else self.head.weight  # (V, D)
    return F.linear(x, w).float()  # (B, T, V)


def _tensor(x) -> torch.Tensor:
  return torch.from_numpy(np.array(x, dtype=np.float32))


def transformer_params_from_flax(params: dict) -> dict[str, torch.Tensor]:
  """Flax `TransformerLM` params (unscanned) -> a torch state dict.

  Flax Dense kernels are (in, out); torch Linear weights are (out, in).
  """
  sd = {"embed.weight": _tensor(params["embed"]["embedding"]),
        "pos_embed": _tensor(params["pos_embed"]),
        "ln_f.weight": _tensor(params["ln_f"]["scale"]),
        "ln_f.bias": _tensor(params["ln_f"]["bias"])}
  if "head" in params:
    sd["head.weight"] = _tensor(params["head"]["kernel"]).T
  num_layers = sum(k.startswith("block_") for k in params)
  for i in range(num_layers):
    b, pre = params[f"block_{i}"], f"blocks.{i}."
    for ln in ("ln1", "ln2"):
      sd[pre + ln + ".weight"] = _tensor(b[ln]["scale"])
      sd[pre + ln + ".bias"] = _tensor(b[ln]["bias"])
    for path in ("attn/qkv", "attn/proj", "mlp/fc", "mlp/proj"):
      outer, inner = path.split("/")
      dense = b[outer][inner]
      sd[f"{pre}{outer}.{inner}.weight"] = _tensor(dense["kernel"]).T
      sd[f"{pre}{outer}.{inner}.bias"] = _tensor(dense["bias"])
  return {k: v.contiguous() for k, v in sd.items()}


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
  """AdamW groups as in `lm_jax.steps.make_optimizer`: decay matrices only."""
  params = [p for p in model.parameters() if p.requires_grad]
  return [{"params": [p for p in params if p.ndim >= 2],
           "weight_decay": weight_decay},
          {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
