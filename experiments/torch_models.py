"""PyTorch twins of the lm_jax models, and converters from Flax parameters.

`TorchTransformerLM` computes the same function as
`lm_jax.models.transformer.TransformerLM`: learned positions, pre-LayerNorm
blocks, one fused qkv projection with bias, tanh or erf GELU, a head tied to
the token embedding, dropout at the same places and the same initialisation
(normal 0.02, GPT-2's 0.02 / sqrt(2 L) for projections into the residual
stream, zero biases); and the same recipe options
(lm_jax/models/recipe.py: rotary positions, RMSNorm, QK-norm, ReLU^2 or
SwiGLU, zero-initialised projections, a logit soft-cap).
`transformer_params_from_flax` copies Flax parameters into it, so both
frameworks can be checked on the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Flax's LayerNorm and RMSNorm default; torch's is 1e-5 (RMSNorm: machine eps).
LAYER_NORM_EPS = 1e-6
ROPE_BASE = 10000.0  # lm_jax.models.recipe.ROPE_BASE


def make_norm(kind: str, dim: int) -> nn.Module:
  """lm_jax.models.recipe.norm: LayerNorm or RMSNorm, epsilon 1e-6."""
  return (nn.RMSNorm(dim, eps=LAYER_NORM_EPS) if kind == "rmsnorm"
          else nn.LayerNorm(dim, eps=LAYER_NORM_EPS))


def rotary(x: torch.Tensor) -> torch.Tensor:
  """lm_jax.models.recipe.rotary at positions 0..T-1 of x (B, H, T, K)."""
  T, K = x.shape[-2:]
  freqs = ROPE_BASE ** (-torch.arange(K // 2, dtype=torch.float32) * 2 / K)
  angles = torch.arange(T, dtype=torch.float32)[:, None] * freqs  # (T, K/2)
  cos, sin = angles.cos(), angles.sin()
  x1, x2 = x.float().chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)


class CausalSelfAttention(nn.Module):
  """Multi-head self-attention where position t sees positions <= t."""

  def __init__(self, d_model: int, num_heads: int, dropout: float,
               position: str = "learned", qk_norm: bool = False):
    super().__init__()
    self.num_heads, self.dropout = num_heads, dropout
    self.qkv = nn.Linear(d_model, 3 * d_model)
    self.proj = nn.Linear(d_model, d_model)
    self.rope = position == "rope"
    K = d_model // num_heads
    self.q_norm = make_norm("rmsnorm", K) if qk_norm else None
    self.k_norm = make_norm("rmsnorm", K) if qk_norm else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    B, T, D = x.shape
    H, K = self.num_heads, D // self.num_heads
    # Same layout as the Flax model: qkv features are [q | k | v], each H x K.
    q, k, v = self.qkv(x).view(B, T, 3, H, K).permute(2, 0, 3, 1, 4)  # (B, H, T, K)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    if self.rope:
      q, k = rotary(q), rotary(k)
    # PyTorch's fused kernel: the fastest eager path, the same math.
    y = F.scaled_dot_product_attention(
        q, k, v, is_causal=True,
        dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, K)
    return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
  """Position-wise feed-forward network: 4x wider inside, GELU or ReLU^2;
  or SwiGLU, 8/3 wider, gate and value from one fused product."""

  def __init__(self, d_model: int, gelu_approximate: bool, kind: str = "gelu"):
    super().__init__()
    hidden = 8 * d_model // 3 if kind == "swiglu" else 4 * d_model
    self.fc = nn.Linear(d_model, 2 * hidden if kind == "swiglu" else hidden)
    self.proj = nn.Linear(hidden, d_model)
    self.kind = kind
    self.approximate = "tanh" if gelu_approximate else "none"

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    h = self.fc(x)
    if self.kind == "swiglu":
      gate, value = h.chunk(2, dim=-1)
      h = F.silu(gate) * value
    elif self.kind == "relu2":
      h = F.relu(h).square()
    else:
      h = F.gelu(h, approximate=self.approximate)
    return self.proj(h)


class Block(nn.Module):
  """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

  def __init__(self, d_model: int, num_heads: int, dropout: float,
               gelu_approximate: bool, position: str = "learned",
               norm_kind: str = "layernorm", qk_norm: bool = False,
               mlp: str = "gelu"):
    super().__init__()
    self.ln1 = make_norm(norm_kind, d_model)
    self.attn = CausalSelfAttention(d_model, num_heads, dropout, position,
                                    qk_norm)
    self.ln2 = make_norm(norm_kind, d_model)
    self.mlp = MLP(d_model, gelu_approximate, mlp)
    self.drop = nn.Dropout(dropout)

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
    x = x + self.drop(self.attn(self.ln1(x)))
    return x + self.drop(self.mlp(self.ln2(x)))


class TorchTransformerLM(nn.Module):
  """Token + learned position embeddings, N blocks, LayerNorm, output head.

  Takes the same fields as `TransformerLM` (`scan_layers`, `dtype`, `remat`
  and the attention choice are accepted and ignored: bf16 products come from
  `torch.autocast`, and attention is always PyTorch's fused kernel).
  """

  def __init__(self, vocab_size: int, num_layers: int = 4, num_heads: int = 4,
               d_model: int = 128, max_len: int = 256, dropout: float = 0.0,
               tie_embeddings: bool = True, scan_layers: bool = False,
               dtype: str = "float32", gelu_approximate: bool = True,
               attention: str = "dense", attention_tile: int = 64,
               remat: bool = False,
               position: str = "learned", norm: str = "layernorm",
               qk_norm: bool = False, mlp: str = "gelu",
               zero_init_proj: bool = False, logit_softcap: float = 0.0):
    super().__init__()
    del scan_layers, dtype, attention, attention_tile, remat
    self.embed = nn.Embedding(vocab_size, d_model)
    self.pos_embed = (nn.Parameter(torch.zeros(max_len, d_model))
                      if position == "learned" else None)
    self.drop = nn.Dropout(dropout)
    self.blocks = nn.ModuleList(
        Block(d_model, num_heads, dropout, gelu_approximate, position, norm,
              qk_norm, mlp)
        for _ in range(num_layers))
    self.ln_f = make_norm(norm, d_model)
    self.head = (None if tie_embeddings
                 else nn.Linear(d_model, vocab_size, bias=False))
    self.logit_softcap = logit_softcap
    self._init_weights(0.0 if zero_init_proj
                       else 0.02 / math.sqrt(2 * num_layers),
                       0.0 if zero_init_proj else 0.02)

  @torch.no_grad()
  def _init_weights(self, residual_std: float, head_std: float) -> None:
    for name, p in self.named_parameters():
      if name.endswith("bias"):
        p.zero_()
      elif ".ln" in name or name.startswith("ln_f") or "_norm." in name:
        p.fill_(1.0)  # LayerNorm and RMSNorm scales
      else:
        std = (residual_std if name.endswith("proj.weight")
               else head_std if name.startswith("head.") else 0.02)
        p.normal_(0.0, std)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int
    T = tokens.shape[1]
    x = self.embed(tokens)  # (B, T, D)
    if self.pos_embed is not None:
      x = x + self.pos_embed[:T]
    x = self.drop(x)
    for block in self.blocks:
      x = block(x)
    x = self.ln_f(x)
    w = self.embed.weight if self.head is None else self.head.weight  # (V, D)
    logits = F.linear(x, w).float()  # (B, T, V)
    if self.logit_softcap:
      logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
    return logits


def _tensor(x) -> torch.Tensor:
  return torch.from_numpy(np.array(x, dtype=np.float32))


def transformer_params_from_flax(params: dict) -> dict[str, torch.Tensor]:
  """Flax `TransformerLM` params (unscanned) -> a torch state dict.

  Flax Dense kernels are (in, out); torch Linear weights are (out, in).
  """
  sd = {"embed.weight": _tensor(params["embed"]["embedding"])}
  if "pos_embed" in params:  # (none with rotary positions)
    sd["pos_embed"] = _tensor(params["pos_embed"])
  if "head" in params:
    sd["head.weight"] = _tensor(params["head"]["kernel"]).T

  def add_norm(name: str, flax_norm: dict) -> None:  # RMSNorm: no bias
    sd[name + ".weight"] = _tensor(flax_norm["scale"])
    if "bias" in flax_norm:
      sd[name + ".bias"] = _tensor(flax_norm["bias"])

  add_norm("ln_f", params["ln_f"])
  num_layers = sum(k.startswith("block_") for k in params)
  for i in range(num_layers):
    b, pre = params[f"block_{i}"], f"blocks.{i}."
    for ln in ("ln1", "ln2"):
      add_norm(pre + ln, b[ln])
    for qk in ("q_norm", "k_norm"):
      if qk in b["attn"]:
        add_norm(f"{pre}attn.{qk}", b["attn"][qk])
    for path in ("attn/qkv", "attn/proj", "mlp/fc", "mlp/proj"):
      outer, inner = path.split("/")
      dense = b[outer][inner]
      sd[f"{pre}{outer}.{inner}.weight"] = _tensor(dense["kernel"]).T
      sd[f"{pre}{outer}.{inner}.bias"] = _tensor(dense["bias"])
  return {k: v.contiguous() for k, v in sd.items()}


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
  """AdamW groups as in `lm_jax.training.optimizers.make_optimizer`: decay matrices only."""
  params = [p for p in model.parameters() if p.requires_grad]
  return [{"params": [p for p in params if p.ndim >= 2],
           "weight_decay": weight_decay},
          {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
