"""An encoder-decoder Transformer (Vaswani et al. 2017), pre-LayerNorm.

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

from lm_jax.models.base import ConfigError, positive
from lm_jax.models.seq2seq import Seq2SeqModel, Seq2SeqSettings
from lm_jax.models.transformer import (MLP, CausalSelfAttention,
                                       TransformerSettings)
from lm_jax.special_tokens import PAD_ID

F32 = jnp.float32


def init(std: float) -> nn.initializers.Initializer:
  return nn.initializers.normal(stddev=std)


class Attention(nn.Module):
  """Multi-head attention of queries `x` over keys and values made once.

  `keys_values(memory)` projects what is attended to (the encoder's
  output, or a block's own input in the encoder); `__call__` attends to
  them where `mask` (B, S) is True. Returns the output and the weights.
  """
  s: TransformerSettings
  residual_std: float

  def setup(self):
    D = self.s.d_model
    self.q = nn.Dense(D, kernel_init=init(0.02))
    self.kv = nn.Dense(2 * D, kernel_init=init(0.02))
    self.proj = nn.Dense(D, kernel_init=init(self.residual_std))

  def keys_values(self, memory):  # (B, S, D)
    B, S, _ = memory.shape
    H, K = self.s.num_heads, self.s.d_model // self.s.num_heads
    k, v = self.kv(memory).reshape(B, S, 2, H, K).transpose(2, 0, 3, 1, 4)
    return k, v  # (B, H, S, K) each

  def __call__(self, x, k, v, mask):  # (B, T, D), (B, H, S, K) x 2, (B, S)
    B, T, D = x.shape
    H, K = self.s.num_heads, D // self.s.num_heads
    q = self.q(x).reshape(B, T, H, K).transpose(0, 2, 1, 3)  # (B, H, T, K)
    scores = jnp.einsum("bhtk,bhsk->bhts", q, k) / math.sqrt(K)
    # The lowest finite score, not -inf: a row of PAD alone stays finite.
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(F32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # (B, H, T, S)
    y = jnp.einsum("bhts,bhsk->bhtk", weights, v)
    return self.proj(y.transpose(0, 2, 1, 3).reshape(B, T, D)), weights


class EncoderBlock(nn.Module):
  """x + attn(ln(x)) over every unmasked position, then x + mlp(ln(x))."""
  s: TransformerSettings
  residual_std: float

  @nn.compact
  def __call__(self, x, mask, train: bool):  # (B, S, D), (B, S)
    drop = nn.Dropout(self.s.dropout, deterministic=not train)
    attn = Attention(self.s, self.residual_std, name="attn")
    h = nn.LayerNorm(name="ln1")(x)
    k, v = attn.keys_values(h)
    x = x + drop(attn(h, k, v, mask)[0])
    return x + drop(MLP(self.s, self.residual_std, name="mlp")(
        nn.LayerNorm(name="ln2")(x)))


class DecoderBlock(nn.Module):
  """x + self_attn(ln(x)) (causal, cached), x + cross_attn(ln(x), memory),
  then x + mlp(ln(x)). `cross_keys_values` is what `encode` computes."""
  s: TransformerSettings
  residual_std: float

  def setup(self):
    self.ln1, self.ln2, self.ln3 = (nn.LayerNorm() for _ in range(3))
    # The language model's causal self-attention (dense, no dropout on
    # its weights: the block drops the branch's output instead).
    self.attn = CausalSelfAttention(dataclasses.replace(self.s, dropout=0.0),
                                    self.residual_std, True)
    self.cross = Attention(self.s, self.residual_std)
    self.mlp = MLP(self.s, self.residual_std)
    self.drop = nn.Dropout(self.s.dropout)

  def cross_keys_values(self, memory):  # (B, S, D)
    return self.cross.keys_values(memory)

  def __call__(self, x, past, cross, mask, train: bool):  # x (B, T, D)
    """New x, this chunk's self-attention keys and values, cross weights."""
    drop = lambda y: self.drop(y, deterministic=not train)
    h, kv = self.attn(self.ln1(x), past)
    x = x + drop(h)
    h, weights = self.cross(self.ln2(x), *cross, mask)
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


class TransformerSeq2Seq(Seq2SeqModel):
  """Token and learned position embeddings (one table for source and
  target), N encoder and N decoder blocks, final LayerNorms, tied head.

  `settings` is `config.model` less `kind` (see configs/echo_s2s.py).
  """
  kind: ClassVar[str] = "transformer_s2s"
  Settings: ClassVar[type] = TransformerSeq2SeqSettings

  settings: TransformerSeq2SeqSettings

  def setup(self):
    L, D = self.settings.num_layers, self.settings.d_model
    self.embed = nn.Embed(self.vocab_size, D, embedding_init=init(0.02))
    self.src_pos = self.param("src_pos", init(0.02), (self.max_source_len, D))
    self.tgt_pos = self.param("tgt_pos", init(0.02),
                              (self.max_target_len + 1, D))
    s = self.block_settings()
    # GPT-2: scale the init of projections into the residual stream (3 of
    # them per decoder layer, 2 per encoder layer).
    std = 0.02 / math.sqrt(3 * L)
    self.encoder = [EncoderBlock(s, std) for _ in range(L)]
    self.decoder = [DecoderBlock(s, std) for _ in range(L)]
    self.ln_enc, self.ln_dec = nn.LayerNorm(), nn.LayerNorm()
    self.drop = nn.Dropout(self.settings.dropout)

  def block_settings(self) -> TransformerSettings:
    """The blocks' settings: this model's sizes, dropout and GELU, with the
    plain GPT's choices (learned positions, LayerNorm, GELU MLP, dense
    attention)."""
    s = self.settings
    return TransformerSettings(
        num_layers=s.num_layers, num_heads=s.num_heads, d_model=s.d_model,
        max_len=s.max_target_len + 1, dropout=s.dropout, tie_embeddings=True,
        scan_layers=False, dtype="float32",
        gelu_approximate=s.gelu_approximate, attention="dense",
        attention_tile=64, remat=False, position="learned",
        norm="layernorm", qk_norm=False, mlp="gelu", zero_init_proj=False,
        logit_softcap=0.0)

  def encode(self, src, train: bool = False) -> dict:  # (B, S) int
    """The encoder's output, the source mask, and every decoder layer's
    cross-attention keys and values (L-tuples of (B, H, S, K))."""
    mask = src != PAD_ID  # (B, S)
    x = self.embed(src) + self.src_pos[:src.shape[1]]  # (B, S, D)
    x = self.drop(x, deterministic=not train)
    for block in self.encoder:
      x = block(x, mask, train)
    x = self.ln_enc(x)
    k, v = zip(*(block.cross_keys_values(x) for block in self.decoder))
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
    x = self.embed(tokens) + jax.lax.dynamic_slice_in_dim(
        self.tgt_pos, start, tokens.shape[1])  # (B, T, D)
    x = self.drop(x, deterministic=not train)
    kvs, weights = [], []
    for i, block in enumerate(self.decoder):
      past = None if cache is None else (cache["k"][i], cache["v"][i], start)
      cross = (memory["cross_k"][i], memory["cross_v"][i])
      x, kv, w = block(x, past, cross, memory["mask"], train)
      kvs.append(kv)
      weights.append(w)
    logits = self.embed.attend(self.ln_dec(x))  # (B, T, V), tied
    return logits.astype(F32), tuple(zip(*kvs)), jnp.stack(weights, axis=1)

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
    if train.carry_state:
      raise ConfigError(
          "config.train.carry_state=True needs a recurrent language model; "
          "an encoder-decoder starts every reply afresh: set "
          "--config.train.carry_state=False")

  def lookup_params(self, params) -> int:
    """Position embeddings (the token table is also the head: a product)."""
    return int(params["src_pos"].size + params["tgt_pos"].size)
