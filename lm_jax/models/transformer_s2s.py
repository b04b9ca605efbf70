"""An encoder-decoder Transformer (Vaswani et al. 2017), pre-norm.

The encoder reads the whole prompt at once: N blocks of self-attention
over every source position (no causal mask; PAD keys masked out) and an
MLP. The decoder writes the reply: N blocks of causal self-attention over
the reply so far, cross-attention from each reply position to the
encoder's output (PAD keys masked out), and an MLP. One embedding table
serves the source, the decoder's inputs and the output head.

Decoding (`lm_jax.models.seq2seq`): `encode` runs the encoder once and
projects its output to every decoder layer's cross-attention keys and
values, so each decoding step only attends to them; the decoder's own
keys and values are cached as in `TransformerLM`. The decoder's causal
self-attention, the MLP and their init are those of
`lm_jax/models/transformer.py`.

Positions and the causal model's recipe (lm_jax/models/recipe.py):
`position="learned"` adds a table per side; `"rope"` rotates q and k in
the encoder's and the decoder's self-attention instead. `cross_position`
says what the cross-attention knows of positions: "none" (content only),
"start" (rope: queries at their reply position, keys at their prompt
position, so a score sees the offset, which is what copying needs) or
"both" (as "start" in the first half of the heads, the other heads
counting prompt positions from its last token backwards: reply position
t then meets prompt token n-1-t at offset 0, which is what reversing
needs). `norm`, `qk_norm`, `mlp`, `zero_init_proj` and `logit_softcap`
are the causal model's, in every block.

Shapes in comments: B batch, S source positions, T target positions,
D width, H heads, K head size (D / H), L layers, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.models import recipe
from lm_jax.models.base import ConfigError, positive
from lm_jax.models.seq2seq import Seq2SeqModel, Seq2SeqSettings
from lm_jax.models.transformer import (MLP, CausalSelfAttention,
                                       TransformerSettings)
from lm_jax.special_tokens import PAD_ID

F32 = jnp.float32
CROSS_POSITIONS = ("none", "start", "both")


def init(std: float) -> nn.initializers.Initializer:
  return nn.initializers.normal(stddev=std)


class Attention(nn.Module):
  """Multi-head attention of queries `x` over keys and values made once.

  `keys_values(memory)` projects what is attended to (the encoder's
  output, or a block's own input in the encoder); `__call__` attends to
  them where `mask` (B, S) is True. Returns the output and the weights.
  With `s.qk_norm` q and k are RMS-normed per head; given positions
  (rotary: (S,) or broadcasting to (B, H, S) for keys, (T,) for queries)
  they are rotated by them (recipe.py), keys once, as cached.
  """
  s: TransformerSettings
  residual_std: float

  def setup(self):
    D = self.s.d_model
    self.q = nn.Dense(D, kernel_init=init(0.02))
    self.kv = nn.Dense(2 * D, kernel_init=init(0.02))
    self.proj = nn.Dense(D, kernel_init=init(self.residual_std))
    if self.s.qk_norm:
      self.q_norm, self.k_norm = nn.RMSNorm(), nn.RMSNorm()

  def keys_values(self, memory, positions=None):  # (B, S, D)
    B, S, _ = memory.shape
    H, K = self.s.num_heads, self.s.d_model // self.s.num_heads
    k, v = self.kv(memory).reshape(B, S, 2, H, K).transpose(2, 0, 3, 1, 4)
    if self.s.qk_norm:
      k = self.k_norm(k)
    if positions is not None:
      k = recipe.rotary(k, positions)
    return k, v  # (B, H, S, K) each

  def __call__(self, x, k, v, mask, positions=None):
    # x (B, T, D), k and v (B, H, S, K), mask (B, S), positions (T,)
    B, T, D = x.shape
    H, K = self.s.num_heads, D // self.s.num_heads
    q = self.q(x).reshape(B, T, H, K).transpose(0, 2, 1, 3)  # (B, H, T, K)
    if self.s.qk_norm:
      q = self.q_norm(q)
    if positions is not None:
      q = recipe.rotary(q, positions)
    scores = jnp.einsum("bhtk,bhsk->bhts", q, k) / math.sqrt(K)
    # The lowest finite score, not -inf: a row of PAD alone stays finite.
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(F32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # (B, H, T, S)
    y = jnp.einsum("bhts,bhsk->bhtk", weights, v)
    return self.proj(y.transpose(0, 2, 1, 3).reshape(B, T, D)), weights


class EncoderBlock(nn.Module):
  """x + attn(ln(x)) over every unmasked position, then x + mlp(ln(x)).
  With rope, q and k are rotated by their prompt positions."""
  s: TransformerSettings
  residual_std: float

  @nn.compact
  def __call__(self, x, mask, train: bool):  # (B, S, D), (B, S)
    drop = nn.Dropout(self.s.dropout, deterministic=not train)
    attn = Attention(self.s, self.residual_std, name="attn")
    h = recipe.norm(self.s.norm, "ln1")(x)
    positions = (jnp.arange(x.shape[1]) if self.s.position == "rope"
                 else None)
    k, v = attn.keys_values(h, positions)
    x = x + drop(attn(h, k, v, mask, positions)[0])
    return x + drop(MLP(self.s, self.residual_std, name="mlp")(
        recipe.norm(self.s.norm, "ln2")(x)))


class DecoderBlock(nn.Module):
  """x + self_attn(ln(x)) (causal, cached), x + cross_attn(ln(x), memory),
  then x + mlp(ln(x)). `cross_keys_values` is what `encode` computes."""
  s: TransformerSettings
  residual_std: float

  def setup(self):
    self.ln1, self.ln2, self.ln3 = (recipe.norm(self.s.norm)
                                    for _ in range(3))
    # The language model's causal self-attention (dense, no dropout on
    # its weights: the block drops the branch's output instead).
    self.attn = CausalSelfAttention(dataclasses.replace(self.s, dropout=0.0),
                                    self.residual_std, True)
    self.cross = Attention(self.s, self.residual_std)
    self.mlp = MLP(self.s, self.residual_std)
    self.drop = nn.Dropout(self.s.dropout)

  def cross_keys_values(self, memory, positions=None):  # (B, S, D)
    return self.cross.keys_values(memory, positions)

  def __call__(self, x, past, cross, mask, train: bool, positions=None):
    """New x (B, T, D), this chunk's self-attention keys and values, cross
    weights; `positions` (T,) rotate the cross-attention's queries."""
    drop = lambda y: self.drop(y, deterministic=not train)
    h, kv = self.attn(self.ln1(x), past)
    x = x + drop(h)
    h, weights = self.cross(self.ln2(x), *cross, mask, positions)
    x = x + drop(h)
    return x + drop(self.mlp(self.ln3(x))), kv, weights


@dataclasses.dataclass(frozen=True)
class TransformerSeq2SeqSettings(Seq2SeqSettings):
  """The Transformer encoder-decoder's settings: `config.model` less
  `kind`; its blocks get a `TransformerSettings` made from them."""
  num_layers: int  # L encoder blocks, and L decoder blocks
  num_heads: int  # H
  d_model: int  # D
  dropout: float
  gelu_approximate: bool  # tanh GELU, as in GPT-2
  position: str  # "learned" or "rope" (self-attention; recipe.py)
  cross_position: str  # "none", "start" or "both" (the module's docstring)
  norm: str  # "layernorm" or "rmsnorm"
  qk_norm: bool
  mlp: str  # "gelu", "relu2" or "swiglu"
  zero_init_proj: bool
  logit_softcap: float  # 0: off


class TransformerSeq2Seq(Seq2SeqModel):
  """Token embeddings (one table for source and target; learned position
  tables, or rotary positions in attention), N encoder and N decoder
  blocks, final norms, tied head.

  `settings` is `config.model` less `kind` (see configs/echo_s2s.py).
  """
  kind: ClassVar[str] = "transformer_s2s"
  Settings: ClassVar[type] = TransformerSeq2SeqSettings

  settings: TransformerSeq2SeqSettings

  def setup(self):
    L, D = self.settings.num_layers, self.settings.d_model
    self.embed = nn.Embed(self.vocab_size, D, embedding_init=init(0.02))
    if self.settings.position == "learned":
      self.src_pos = self.param("src_pos", init(0.02),
                                (self.max_source_len, D))
      self.tgt_pos = self.param("tgt_pos", init(0.02),
                                (self.max_target_len + 1, D))
    s = self.block_settings()
    # GPT-2: scale the init of projections into the residual stream (3 of
    # them per decoder layer, 2 per encoder layer); zero_init_proj: 0.
    std = 0.0 if s.zero_init_proj else 0.02 / math.sqrt(3 * L)
    self.encoder = [EncoderBlock(s, std) for _ in range(L)]
    self.decoder = [DecoderBlock(s, std) for _ in range(L)]
    self.ln_enc, self.ln_dec = recipe.norm(s.norm), recipe.norm(s.norm)
    self.drop = nn.Dropout(self.settings.dropout)

  def block_settings(self) -> TransformerSettings:
    """The blocks' settings: this model's sizes, dropout, GELU and recipe
    options (recipe.py), dense float32 attention."""
    s = self.settings
    return TransformerSettings(
        num_layers=s.num_layers, num_heads=s.num_heads, d_model=s.d_model,
        max_len=s.max_target_len + 1, dropout=s.dropout, tie_embeddings=True,
        scan_layers=False, dtype="float32",
        gelu_approximate=s.gelu_approximate, attention="dense",
        attention_tile=64, remat=False, position=s.position,
        norm=s.norm, qk_norm=s.qk_norm, mlp=s.mlp,
        zero_init_proj=s.zero_init_proj, logit_softcap=s.logit_softcap)

  def cross_key_positions(self, mask):  # (B, S) bool
    """The rotary positions of the cross-attention's keys: None ("none"),
    (S,) from the prompt's start, or (B, H, S): the first H - H//2 heads
    from the start, the others from the prompt's last token backwards."""
    s, S = self.settings, mask.shape[1]
    if s.cross_position == "none":
      return None
    forward = jnp.arange(S)
    if s.cross_position == "start":
      return forward
    B, H = mask.shape[0], s.num_heads
    last = mask.sum(axis=1, keepdims=True) - 1  # (B, 1): prompts end-padded
    backward = jnp.broadcast_to(last - forward, (B, S))
    heads = jnp.arange(H)[None, :, None] >= H - H // 2  # (1, H, 1)
    return jnp.where(heads, backward[:, None, :], forward)  # (B, H, S)

  def encode(self, src, train: bool = False) -> dict:  # (B, S) int
    """The encoder's output, the source mask, and every decoder layer's
    cross-attention keys and values (L-tuples of (B, H, S, K))."""
    mask = src != PAD_ID  # (B, S)
    x = self.embed(src)  # (B, S, D)
    if self.settings.position == "learned":
      x = x + self.src_pos[:src.shape[1]]
    x = self.drop(x, deterministic=not train)
    for block in self.encoder:
      x = block(x, mask, train)
    x = self.ln_enc(x)
    positions = self.cross_key_positions(mask)
    k, v = zip(*(block.cross_keys_values(x, positions)
                 for block in self.decoder))
    return {"encoded": x, "mask": mask, "cross_k": k, "cross_v": v}

  def initial_state(self, memory: dict) -> dict:
    """The memory, and an empty cache of the decoder's own keys (B, H, K,
    P) and values (B, H, P, K) per layer, P = max_target_len + 1."""
    s = self.settings
    B, H = memory["mask"].shape[0], s.num_heads
    K, P = s.d_model // H, s.max_target_len + 1
    zeros = lambda shape: tuple(jnp.zeros(shape, F32)
                                for _ in range(s.num_layers))
    return {**memory, "k": zeros((B, H, K, P)), "v": zeros((B, H, P, K)),
            "length": jnp.zeros((), jnp.int32)}

  def extend(self, tokens, state: dict, train: bool = False):  # (B, T) int
    """Logits (B, T, V) of `tokens` after the cached reply, new state.

    The caller keeps length + T <= max_target_len + 1.
    """
    logits, (k, v), _ = self.decode(tokens, state, state, train)
    write = lambda axis: lambda cache, new: (
        jax.lax.dynamic_update_slice_in_dim(cache, new, state["length"], axis))
    return logits, {**state, "k": jax.tree.map(write(3), state["k"], k),
                    "v": jax.tree.map(write(2), state["v"], v),
                    "length": state["length"] + tokens.shape[1]}

  def __call__(self, src, tgt_in, train: bool = False):  # (B, S), (B, T)
    """Teacher-forced logits (B, T, V): one pass, no cache."""
    return self.decode(tgt_in, self.encode(src, train), None, train)[0]

  def decode(self, tokens, memory: dict, cache: dict | None, train: bool):
    """Logits, the chunk's keys and values, and the cross-attention weights
    (B, L, H, T, S) of `tokens` following the cached reply (`cache` None:
    from the first position, with nothing cached)."""
    start = 0 if cache is None else cache["length"]
    x = self.embed(tokens)  # (B, T, D)
    if self.settings.position == "learned":
      x = x + jax.lax.dynamic_slice_in_dim(self.tgt_pos, start,
                                           tokens.shape[1])
    positions = (None if self.settings.cross_position == "none"
                 else start + jnp.arange(tokens.shape[1]))  # cross queries
    x = self.drop(x, deterministic=not train)
    kvs, weights = [], []
    for i, block in enumerate(self.decoder):
      past = None if cache is None else (cache["k"][i], cache["v"][i], start)
      cross = (memory["cross_k"][i], memory["cross_v"][i])
      x, kv, w = block(x, past, cross, memory["mask"], train, positions)
      kvs.append(kv)
      weights.append(w)
    logits = self.embed.attend(self.ln_dec(x))  # (B, T, V), tied
    logits = recipe.softcap(logits.astype(F32), self.settings.logit_softcap)
    return logits, tuple(zip(*kvs)), jnp.stack(weights, axis=1)

  def cross_attention(self, src, tgt_in):  # (B, S), (B, T) int
    return self.decode(tgt_in, self.encode(src), None, False)[2]

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    positive(model, "num_heads", "d_model")
    if model.d_model % model.num_heads:
      raise ConfigError(
          f"config.model.d_model ({model.d_model}) must be divisible by "
          f"config.model.num_heads ({model.num_heads}); change either")
    recipe.check_config(model)
    if model.cross_position not in CROSS_POSITIONS:
      raise ConfigError(
          f"config.model.cross_position must be one of "
          f"{', '.join(map(repr, CROSS_POSITIONS))}, got "
          f"{model.cross_position!r}")
    if model.cross_position != "none" and (
        model.d_model // model.num_heads) % 2:
      raise ConfigError(
          f"rotary cross-attention turns pairs of features, and the head "
          f"size d_model / num_heads = {model.d_model // model.num_heads} "
          "is odd; change config.model.d_model or num_heads")
    if train.carry_state:
      raise ConfigError(
          "config.train.carry_state=True needs a recurrent language model; "
          "an encoder-decoder starts every reply afresh: set "
          "--config.train.carry_state=False")

  def lookup_params(self, params) -> int:
    """Position embeddings, if learned (the token table is also the head:
    a product)."""
    return sum(int(params[name].size) for name in ("src_pos", "tgt_pos")
               if name in params)
