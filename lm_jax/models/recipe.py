"""Transformer recipe options from the small-GPT speedruns (modded-nanogpt).

Each is a field of `config.model` and off by default, so today's model and
its checkpoints are unchanged:

  position        "learned" (a table of max_len positions added to the token
                  embeddings) or "rope" (rotary embeddings: q and k rotated
                  by their absolute position, so q.k depends only on the
                  offset between the two; no parameters).
  norm            "layernorm" (scale and bias) or "rmsnorm" (scale only, no
                  mean subtracted).
  qk_norm         RMSNorm on each head's q and k before the dot product: a
                  score q.k / sqrt(K) is then at most sqrt(K) times the two
                  norm scales, however large the inputs.
  mlp             "gelu" (4D wide), "relu2" (ReLU squared, 4D wide) or
                  "swiglu" (silu(x W1) * (x W2), then W3; 3 matrices of
                  width `swiglu_hidden(D)` = 8D/3, so its parameters match
                  GELU's 2 matrices of 4D).
  zero_init_proj  the attention and MLP output projections (and an untied
                  head) start at zero: every block starts as the identity.
  logit_softcap   cap * tanh(logits / cap); 0 = off.

The z-loss is a loss term, not a model field: `config.train.z_loss`
(lm_jax/training/steps.py: loss_fn).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lm_jax.models.base import ConfigError

POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "relu2", "swiglu")
ROPE_BASE = 10000.0  # RoFormer's, Llama's and modded-nanogpt's early runs'


def check_config(model: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first recipe option that cannot work."""
  for name, allowed in (("position", POSITIONS),
                        ("norm", NORMS), ("mlp", MLPS)):
    if model[name] not in allowed:
      raise ConfigError(f"config.model.{name} must be one of "
                        f"{', '.join(map(repr, allowed))}, got "
                        f"{model[name]!r}")
  for name in ("qk_norm", "zero_init_proj"):
    if not isinstance(model[name], bool):
      raise ConfigError(f"config.model.{name} must be True or False, got "
                        f"{model[name]!r}")
  if isinstance(model.logit_softcap, bool) or not (
      isinstance(model.logit_softcap, (int, float))
      and model.logit_softcap >= 0):
    raise ConfigError(f"config.model.logit_softcap must be a number >= 0 "
                      f"(0: off), got {model.logit_softcap!r}")
  if model.position == "rope" and (model.d_model // model.num_heads) % 2:
    raise ConfigError(
        f"rotary embeddings turn pairs of features, and the head size "
        f"d_model / num_heads = {model.d_model // model.num_heads} is odd; "
        "change config.model.d_model or num_heads")


def norm(kind: str, name: str | None = None) -> nn.Module:
  """A LayerNorm or an RMSNorm (epsilon 1e-6 both, Flax's default); no
  name in a `setup`, where the attribute names it."""
  return nn.RMSNorm(name=name) if kind == "rmsnorm" else nn.LayerNorm(name=name)


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x (..., T, K) rotated by its positions (T,), in float32.

  `positions` may also carry leading axes that broadcast against x's
  (e.g. (B, H, T): each row and head its own positions).

  Feature pairs (i, i + K/2) turn by angle position * ROPE_BASE^(-2i/K)
  (the "rotate half" layout of GPT-NeoX and Llama). Rotations compose, so
  rotary(q, m) . rotary(k, n) = q . rotary(k, n - m): only the offset counts.
  """
  K = x.shape[-1]
  freqs = ROPE_BASE ** (-jnp.arange(K // 2, dtype=jnp.float32) * 2 / K)
  angles = positions.astype(jnp.float32)[..., None] * freqs  # (..., T, K/2)
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # (..., T, K/2) each
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def swiglu_hidden(d_model: int) -> int:
  """SwiGLU's hidden width: 8D/3 rounded down. Three D x 8D/3 matrices hold
  what GELU's two D x 4D hold (8 D^2 weights), less at most 3 D."""
  return 8 * d_model // 3


def activation(kind: str, gelu_approximate: bool, h: jax.Array) -> jax.Array:
  """The MLP's nonlinearity on its hidden layer h (B, T, F or 2F).

  For "swiglu" h holds the gate and the value side by side (one fused
  matrix product) and the result is half as wide.
  """
  if kind == "swiglu":
    gate, value = jnp.split(h, 2, axis=-1)
    return nn.silu(gate) * value
  if kind == "relu2":
    return jnp.square(nn.relu(h))
  return nn.gelu(h, approximate=gelu_approximate)


def softcap(logits: jax.Array, cap: float) -> jax.Array:
  """cap * tanh(logits / cap): smooth, near the identity for |logits| << cap,
  never past +-cap. cap 0: the logits unchanged."""
  return cap * jnp.tanh(logits / cap) if cap else logits
