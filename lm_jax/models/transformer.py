"""A GPT-style causal Transformer language model (Flax Linen).

Shapes in comments: B batch, T time (sequence), D width (`d_model`),
H heads, K head size (D / H), V vocabulary.

Precision: parameters, LayerNorm, softmax, the residual stream and the loss
stay in float32; with `dtype="bfloat16"` only the matrix products (and the
activations feeding them) run in bfloat16.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.models.attention import (attention_over_cache,
                                    attention_with_past,
                                     blocked_causal_attention)
from lm_jax.models import recipe
from lm_jax.models.base import (ConfigError, count, Internals, LanguageModel,
    positive)


def _normal(std: float):
  return nn.initializers.normal(stddev=std)


@dataclasses.dataclass(frozen=True)
class TransformerSettings:
  """A Transformer's settings: `config.model` less `kind`, declared once.

  The model holds one of these and hands it to every block, so a new
  option is a field here and its use in a block. The config file gives
  every field (base_config in lm_jax/config.py); a config.json written
  before a field existed is upgraded where it is read (lm_jax/runs/
  rundir.py: upgrade). The recipe options (position to logit_softcap) are
  in recipe.py.
  """
  num_layers: int
  num_heads: int  # H; the head size K is d_model / num_heads
  d_model: int  # D, the width of the residual stream
  max_len: int  # the longest context: the cache, and learned positions
  dropout: float  # on embeddings, attention weights and residual branches
  tie_embeddings: bool  # the output head is the token embedding table
  scan_layers: bool  # one nn.scan over stacked blocks: compiles once
  dtype: str  # of the matrix products: "float32" or "bfloat16"
  gelu_approximate: bool  # tanh GELU, as in GPT-2
  attention: str  # "dense" (sows its weights) or "blocked" (attention.py)
  attention_tile: int  # positions per tile of blocked attention
  # Recompute each block's cheap parts (norms, activations, attention) in
  # the backward pass, keeping only its matrix products' outputs.
  remat: bool
  position: str  # "learned" or "rope"
  norm: str  # "layernorm" or "rmsnorm"
  qk_norm: bool
  mlp: str  # "gelu", "relu2" or "swiglu"
  zero_init_proj: bool
  logit_softcap: float  # 0: off

  @property
  def residual_std(self) -> float:
    """Init scale of projections into the residual stream. GPT-2: 0.02
    over sqrt(2L), two per block; modded-nanogpt: 0, every block starts as
    the identity."""
    return 0.0 if self.zero_init_proj else 0.02 / math.sqrt(
        2 * self.num_layers)


class CausalSelfAttention(nn.Module):
  """Multi-head self-attention where position t sees positions <= t (or,
  with `causal` False, every position: the masked LM's encoder, dense only).

  With `past` (keys and values of earlier positions, and how many are
  valid), the chunk `x` continues that text: it attends to the valid past
  and causally to itself. Returns the output and the chunk's own keys and
  values, which the caller stores for later chunks.

  `s.attention`: "dense" computes and sows the (T, T) weights (what
  `lm-jax-inspect` shows); "blocked" computes the same output in tiles of
  `s.attention_tile` positions without them (lm_jax/models/attention.py).
  Both drop attention weights when training with `s.dropout` > 0 (the two
  draw different masks from the same key); the cached path (`past`,
  inference only) drops nothing. `s.qk_norm` and `s.position="rope"`
  change q and k before either (recipe.py), and the cache holds the keys
  as changed.
  """
  s: TransformerSettings
  residual_std: float
  deterministic: bool
  causal: bool = True
  # One decoding position (T 1) with `past`: its key and value are written
  # into the cache first and the cache is read after
  # (`attention_over_cache`); the layer returns the whole updated cache.
  write: bool = False

  @nn.compact
  def __call__(self, x, past=None):  # (B, T, D)
    s, dtype = self.s, jnp.dtype(self.s.dtype)
    B, T, D = x.shape
    H, K = s.num_heads, D // s.num_heads
    qkv = nn.Dense(3 * D, dtype=dtype, kernel_init=_normal(0.02),
                   name="qkv")(x)  # (B, T, 3D)
    # Heads-major (B, H, T, K): each head's rows contiguous, the layout in
    # which XLA's CPU batched products run fastest (in a standalone probe,
    # 2.5x for the weights-times-values product against reading (B, T, H, K)
    # in place; about 5% of a 6-layer/384 training step).
    q, k, v = qkv.reshape(B, T, 3, H, K).transpose(2, 0, 3, 1, 4)
    if s.qk_norm:  # per head, over K, in float32
      q = nn.RMSNorm(name="q_norm")(q.astype(jnp.float32))
      k = nn.RMSNorm(name="k_norm")(k.astype(jnp.float32))
    if s.position == "rope":  # positions after the `past[2]` cached ones
      positions = (0 if past is None else past[2]) + jnp.arange(T)
      q, k = recipe.rotary(q, positions), recipe.rotary(k, positions)
    q, k = q.astype(dtype), k.astype(dtype)
    if self.write:  # decoding one position: the cache first, then read it
      past_k, past_v, length = past
      past_k = jax.lax.dynamic_update_slice_in_dim(
          past_k, k.transpose(0, 1, 3, 2).astype(past_k.dtype), length, 3)
      past_v = jax.lax.dynamic_update_slice_in_dim(
          past_v, v.astype(past_v.dtype), length, 2)
      y = attention_over_cache(q, past_k, past_v, length)
    elif s.attention == "blocked" and past is None and self.causal:
      drop = s.dropout > 0 and not self.deterministic
      y = blocked_causal_attention(
          q, k, v, tile=s.attention_tile,
          dropout_rate=s.dropout if drop else 0.0,
          dropout_rng=self.make_rng("dropout") if drop else None)
    elif s.attention == "blocked" and self.causal:  # decoding: no dropout
      y = attention_with_past(q, k, v, *past, tile=s.attention_tile)
    else:
      y = self.dense(q, k, v, past)
    y = nn.Dense(D, dtype=dtype, kernel_init=_normal(self.residual_std),
                 name="proj")(y.transpose(0, 2, 1, 3).reshape(B, T, D))
    if self.write:
      return y.astype(jnp.float32), (past_k, past_v)  # the whole cache
    # Cache layouts in which the cached einsums read keys and values in
    # place: keys (B, H, K, T), values (B, H, T, K). With keys stored as
    # values are, XLA transposed each layer's whole key cache at every step.
    return y.astype(jnp.float32), (k.transpose(0, 1, 3, 2), v)  # (B, T, D)

  def dense(self, q, k, v, past):  # (B, H, T, K) each
    """The textbook attention: all (T, T) weights at once, sown."""
    T, K = q.shape[2], q.shape[3]
    scores = jnp.einsum("bhqk,bhtk->bhqt", q, k) / math.sqrt(K)  # (B, H, T, T)
    if self.causal:
      causal = jnp.tril(jnp.ones((T, T), dtype=bool))
      scores = jnp.where(causal, scores.astype(jnp.float32), -jnp.inf)
    else:  # the masked LM's encoder: every position sees every other
      scores = scores.astype(jnp.float32)
    if past is not None:
      past_k, past_v, length = past  # (B,H,K,S), (B,H,S,K); valid: < length
      S = past_v.shape[2]
      past_scores = jnp.einsum("bhqk,bhks->bhqs", q, past_k) / math.sqrt(K)
      past_scores = jnp.where(jnp.arange(S) < length,
                              past_scores.astype(jnp.float32), -jnp.inf)
      scores = jnp.concatenate([past_scores, scores], axis=-1)  # (B,H,T,S+T)
    weights = jax.nn.softmax(scores, axis=-1)  # in float32
    self.sow("intermediates", "attention", weights)  # for lm-jax-inspect
    if self.s.dropout > 0:
      weights = nn.Dropout(self.s.dropout)(weights, self.deterministic)
    weights = weights.astype(jnp.dtype(self.s.dtype))
    y = jnp.einsum("bhqt,bhtk->bhqk", weights[..., -T:], v)  # (B, H, T, K)
    if past is not None:  # (no concatenated copy of the cached values)
      y = y + jnp.einsum("bhqs,bhsk->bhqk", weights[..., :S], past_v)
    return y  # (B, H, T, K)


class MLP(nn.Module):
  """Position-wise feed-forward network: 4x wider inside, GELU or ReLU^2;
  or SwiGLU, 8/3 wider with a gate (`s.mlp`, see recipe.py)."""
  s: TransformerSettings
  residual_std: float

  @nn.compact
  def __call__(self, x):  # (B, T, D)
    s, dtype, D = self.s, jnp.dtype(self.s.dtype), x.shape[-1]
    width = (2 * recipe.swiglu_hidden(D) if s.mlp == "swiglu"
             else 4 * D)  # SwiGLU: gate and value in one product
    h = nn.Dense(width, dtype=dtype, kernel_init=_normal(0.02),
                 name="fc")(x)  # (B, T, width)
    h = recipe.activation(s.mlp, s.gelu_approximate, h)
    y = nn.Dense(D, dtype=dtype, kernel_init=_normal(self.residual_std),
                 name="proj")(h)
    return y.astype(jnp.float32)  # (B, T, D)


class Block(nn.Module):
  """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x)).

  Returns the new x and the attention's keys and values for `x` (see
  `CausalSelfAttention`; `past` is None for a full pass).
  """
  s: TransformerSettings
  deterministic: bool
  causal: bool = True  # False: every position sees all (lm_jax/models/mlm.py)
  write: bool = False  # CausalSelfAttention's: the whole cache returned

  @nn.compact
  def __call__(self, x, past=None):  # (B, T, D)
    s = self.s
    drop = lambda y: (nn.Dropout(s.dropout)(y, self.deterministic)
                      if s.dropout > 0 else y)
    h, kv = CausalSelfAttention(s, s.residual_std, self.deterministic,
                                self.causal, self.write, name="attn")(
                                    recipe.norm(s.norm, "ln1")(x), past)
    x = x + drop(h)
    x = x + drop(MLP(s, s.residual_std, name="mlp")(
        recipe.norm(s.norm, "ln2")(x)))
    return x, kv


class ScanBlock(Block):
  """`Block` with the (carry, per-layer input) signature `nn.scan` expects."""

  def __call__(self, x, layer_past, length):
    past = None if layer_past is None else (*layer_past, length)
    return super().__call__(x, past)


class TransformerLM(LanguageModel):
  """Token embeddings (+ learned positions, or rotary ones in attention),
  N pre-norm blocks, a final norm, output head: GPT-2's layout, with the
  recipe options of `settings` (rotary positions, RMSNorm, QK-norm, ReLU^2
  or SwiGLU, zero-initialised projections, a logit soft-cap: recipe.py).

  `settings` is `config.model` less `kind` (`TransformerSettings`); the
  default config (configs/char_tf.py) turns on rope, RMSNorm, QK-norm and
  ReLU^2. `__call__` scores a whole sequence; `initial_state` and `extend`
  decode with a key/value cache of `max_len` positions
  (lm_jax/generation/sampling.py).
  """
  kind: ClassVar[str] = "transformer"
  flops_formula: ClassVar[str] = "6N + 12LTD"
  Settings: ClassVar[type] = TransformerSettings
  causal: ClassVar[bool] = True  # False: the masked LM's encoder (mlm.py)

  settings: TransformerSettings

  def with_settings(self, **changes) -> "TransformerLM":
    """The same model with some settings changed (`dataclasses.replace`)."""
    return self.clone(settings=dataclasses.replace(self.settings, **changes))

  def __call__(self, tokens, train: bool = False):  # (B, T) int
    """Next-token logits (B, T, V) at every position of `tokens`."""
    return self.forward(tokens, None, train)[0]

  def initial_state(self, batch_size: int) -> dict:
    """An empty cache of keys and values, and its length.

    Keys (B, H, K, max_len) and values (B, H, max_len, K) per layer: stacked
    (L, ...) with `scan_layers`, else tuples of L arrays, so that no step
    copies a layer's cache.
    """
    s = self.settings
    B, H, K, S = batch_size, s.num_heads, s.d_model // s.num_heads, s.max_len
    dtype = jnp.dtype(s.dtype)

    def cache(shape):
      if s.scan_layers:
        return jnp.zeros((s.num_layers, *shape), dtype)
      return tuple(jnp.zeros(shape, dtype) for _ in range(s.num_layers))

    return {"k": cache((B, H, K, S)), "v": cache((B, H, S, K)),
            "length": jnp.zeros((), jnp.int32)}

  def extend(self, tokens, state: dict, train: bool = False):  # (B, T) int
    """Logits (B, T, V) of `tokens` continuing the cached text, new state.

    The caller keeps length + T <= max_len (lm_jax/generation/sampling.py
    slides).
    """
    length = state["length"]
    logits, (k, v) = self.forward(tokens, state, train)  # cache-shaped, T long
    if self.writes_cache(state, tokens.shape[1]):  # the whole caches
      return logits, {"k": k, "v": v, "length": length + 1}
    stacked = int(self.settings.scan_layers)  # the layer axis comes first
    write = lambda axis: lambda cache, new: (
        jax.lax.dynamic_update_slice_in_dim(cache, new, length, axis + stacked))
    return logits, {"k": jax.tree.map(write(3), state["k"], k),  # time axes
                    "v": jax.tree.map(write(2), state["v"], v),
                    "length": length + tokens.shape[1]}

  def writes_cache(self, state: dict | None, T: int) -> bool:
    """Whether the layers write a decoded position into the cache
    themselves (one token, layers unscanned: `CausalSelfAttention.write`)."""
    return (state is not None and T == 1 and not self.settings.scan_layers
            and self.causal)

  @property
  def context_length(self) -> int:
    return self.settings.max_len

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    positive(model, "num_heads", "d_model", "max_len")
    if model.d_model % model.num_heads:
      raise ConfigError(
          f"config.model.d_model ({model.d_model}) must be divisible by "
          f"config.model.num_heads ({model.num_heads}); change either")
    if train.seq_len > model.max_len:
      raise ConfigError(
          f"config.train.seq_len ({train.seq_len}) is longer than the model's "
          f"positions (config.model.max_len={model.max_len}); lower seq_len "
          "or raise max_len")
    if model.dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', "
                        f"got {model.dtype!r}")
    if model.attention not in ("dense", "blocked"):
      raise ConfigError(f"config.model.attention must be 'dense' or "
                        f"'blocked', got {model.attention!r}")
    positive(model, "attention_tile")
    recipe.check_config(model)
    if train.carry_state:
      raise ConfigError(
          "config.train.carry_state=True needs a recurrent model (an LSTM "
          "or a GRU); the transformer model carries no state between "
          "windows: set --config.train.carry_state=False or use "
          "configs/char_lstm.py:tbptt")

  def lookup_params(self, params) -> int:
    """Position embeddings, and the token embeddings unless tied (then they
    are also the output head, a matrix product)."""
    n = count(params.get("pos_embed", {}))
    tied = self.settings.tie_embeddings
    return n if tied else n + count(params.get("embed", {}))

  def train_flops_per_token(self, params, seq_len: int) -> float:
    """6 N + 12 L T D: attention adds, per layer, q.k scores and the weighted
    sum of values over T positions: 2 x 2 T D forward, x 3 with the backward
    pass (the causal mask is applied to full T x T scores, so nothing is
    halved); nanoGPT's `estimate_mfu`. N follows the options: SwiGLU's three
    matrices, no position table with rope. Norms, softmax, the activation
    and rope's rotations (O(D) per token each) are left out (a few
    percent)."""
    s = self.settings
    return (super().train_flops_per_token(params, seq_len)
            + 12 * s.num_layers * seq_len * s.d_model)

  def activation_bytes(self, batch_size: int, seq_len: int) -> int:
    """Kept for the backward pass, per token and layer: the block input, two
    LayerNorm outputs, q/k/v (3 D), the attention output and the residual
    after attention (D each), the MLP's hidden layer before and after GELU
    (4 D each): 16 D; plus scores and weights (2 H T), or with blocked
    attention one log-sum-exp per head (H). Then 2 V for the logits and
    their softmax; float32. SwiGLU keeps 2F + F = 8 D (F = 8D/3) where
    GELU keeps 8 D; QK-norm and rope keep q and k once more (2 D each)."""
    s = self.settings
    scores = s.num_heads * (1 if s.attention == "blocked" else 2 * seq_len)
    extra = 2 * s.d_model * (s.qk_norm + (s.position == "rope"))
    per_token = (s.num_layers * (16 * s.d_model + extra + scores)
                 + 2 * self.vocab_size)
    return batch_size * seq_len * per_token * 4

  def internals(self, params, tokens: np.ndarray) -> Internals:
    """Attention weights: a (T, T) map per layer and head; row q is how
    position q spreads its attention over positions 0..q (it sums to 1).

    `CausalSelfAttention` sows its softmax weights into the "intermediates"
    collection; applying the model with that collection mutable returns
    them next to the logits.
    """
    s = self.settings
    model = self.with_settings(attention="dense")  # blocked sows nothing
    if s.scan_layers:  # sow inside nn.scan would need its own axis
      params = unstack_layers(params, s.num_layers)
      model = model.with_settings(scan_layers=False)
    _, state = model.apply({"params": params}, jnp.asarray(tokens)[None],
                           mutable=["intermediates"])
    layers = state["intermediates"]
    values = np.stack([
        np.asarray(layers[f"block_{i}"]["attn"]["attention"][0][0])
        for i in range(s.num_layers)])  # (L, H, T, T)
    return Internals(values, tuple(f"head {h}" for h in range(s.num_heads)),
                     "tokens", (False,) * s.num_heads)

  @nn.compact
  def forward(self, tokens, state: dict | None, train: bool = False):
    """Logits (B, T, V) and the keys and values of `tokens` (cache layout).

    `state` None: `tokens` start at position 0 (the training pass); else
    they follow the `state["length"]` cached positions.
    """
    s = self.settings
    B, T = tokens.shape
    dtype = jnp.dtype(s.dtype)
    start = 0 if state is None else state["length"]
    embed = nn.Embed(self.vocab_size, s.d_model, embedding_init=_normal(0.02),
                     name="embed")
    if s.position == "learned":
      pos = self.param("pos_embed", _normal(0.02), (s.max_len, s.d_model))
      x = embed(tokens) + jax.lax.dynamic_slice_in_dim(pos, start, T)
    else:  # rope: positions enter in attention
      x = embed(tokens)  # (B, T, D)
    if s.dropout > 0:
      x = nn.Dropout(s.dropout)(x, deterministic=not train)
    past = None if state is None else (state["k"], state["v"])
    # remat: the backward pass recomputes what a block's matrix products
    # do not keep (less memory for some time; jax.checkpoint's policies).
    keep_products = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    wrap = (lambda cls: nn.remat(cls, policy=keep_products)
            ) if s.remat else (lambda cls: cls)
    if s.scan_layers:
      blocks = nn.scan(wrap(ScanBlock), variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(0, nn.broadcast), length=s.num_layers)
      x, (k, v) = blocks(s, not train, self.causal, name="blocks")(
          x, past, start)
    else:
      kvs = []
      for i in range(s.num_layers):
        layer_past = None if past is None else (past[0][i], past[1][i], start)
        x, kv = wrap(Block)(s, not train, self.causal,
                            self.writes_cache(state, T), name=f"block_{i}")(
                                x, layer_past)
        kvs.append(kv)
      k, v = zip(*kvs)  # L-tuples of (B, H, K, T) and (B, H, T, K)
    x = recipe.norm(s.norm, "ln_f")(x)
    if s.tie_embeddings:
      logits = jnp.einsum("btd,vd->btv", x.astype(dtype),
                          embed.embedding.astype(dtype))
    else:
      head_std = 0.0 if s.zero_init_proj else 0.02
      logits = nn.Dense(self.vocab_size, use_bias=False, dtype=dtype,
                        kernel_init=_normal(head_std), name="head")(x)
    logits = recipe.softcap(logits.astype(jnp.float32), s.logit_softcap)
    return logits, (k, v)  # (B, T, V)


def stack_layers(params: dict, num_layers: int) -> dict:
  """Unscanned params (`block_0` ... `block_{L-1}`) -> scanned (`blocks`)."""
  params = dict(params)
  layers = [params.pop(f"block_{i}") for i in range(num_layers)]
  params["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return params


def unstack_layers(params: dict, num_layers: int) -> dict:
  """Scanned params (`blocks`) -> unscanned (`block_0` ... `block_{L-1}`)."""
  params = dict(params)
  stacked = params.pop("blocks")
  for i in range(num_layers):
    params[f"block_{i}"] = jax.tree.map(lambda x: x[i], stacked)
  return params
