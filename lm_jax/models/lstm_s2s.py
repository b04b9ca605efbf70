"""An LSTM encoder-decoder with Luong attention (Flax Linen).

Shapes in comments: B batch, S source positions, T decoder steps, D
embedding width, H hidden size, V vocabulary. Inside, activations are
time-major (S or T, B, ...), the layout `lax.scan` walks.

Encoder: `num_layers` bidirectional LSTM layers over the source (embedding
shared with the decoder). Bidirectional because an annotation m_s then
knows both the text before position s and the text after it, so it can
tell how far s is from the end of the prompt: that is what `reverse` has
to attend by. A padding position changes no state (masked steps), so the
backward direction starts at the last real token, and the final states
are those after the last real token.

Decoder: `num_layers` LSTM layers started from the encoder's final states
(a bridge per layer: c0 = W [c_fwd; c_bwd], h0 = tanh(W' [h_fwd; h_bwd])).
With `attention`, the top layer's h_t attends over the source with Luong's
"general" score (Luong et al. 2015): a_ts = softmax_s(h_t . W_a m_s), the
keys W_a m_s computed once by `encode`; the context c_t = sum_s a_ts m_s
and h_t give the attentional state h~_t = tanh(W_c [c_t; h_t]) the head
reads. With `input_feeding`, h~_{t-1} joins the next step's input (Luong's
section 3.3), so the decoder knows what it attended to last. `attention`
False is the classic Sutskever et al. (2014) encoder-decoder: the source
reaches the decoder only through its initial state, and the head reads h_t.

Dropout (training only) applies to the embeddings, to every encoder layer's
output and to what the head reads; not inside the recurrent steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.models.base import ConfigError, count, positive
from lm_jax.models.lstm import forget_bias_one, lstm_cell
from lm_jax.models.seq2seq import Seq2SeqModel, Seq2SeqSettings
from lm_jax.special_tokens import PAD_ID

Carry = tuple[jax.Array, jax.Array]  # (c, h), each (B, H)


class LSTMWeights(nn.Module):
  """One LSTM layer's weights, as the dict `lstm_cell` reads; the same
  initialisers as `lm_jax.models.lstm.LSTMLayer`."""
  input_size: int
  hidden_size: int

  @nn.compact
  def __call__(self) -> dict:
    H = self.hidden_size
    return {
        "input_kernel": self.param("input_kernel",
                                   nn.initializers.lecun_normal(),
                                   (self.input_size, 4 * H)),
        "recurrent_kernel": self.param("recurrent_kernel",
                                       nn.initializers.orthogonal(),
                                       (H, 4 * H)),
        "bias": self.param("bias", forget_bias_one, (4 * H,))}


def masked_lstm(weights: dict, x: jax.Array, mask: jax.Array,
                reverse: bool = False) -> tuple[jax.Array, Carry]:
  """One LSTM direction over x (S, B, D) where mask (S, B) is True; a
  masked step keeps the state. Returns hs (S, B, H) and the final (c, h)."""
  H = weights["recurrent_kernel"].shape[0]
  zero = jnp.zeros((x.shape[1], H), x.dtype)

  def step(carry, inputs):
    x_t, m_t = inputs
    new = lstm_cell(weights, x_t, carry)
    carry = tuple(jnp.where(m_t[:, None], n, old)
                  for n, old in zip(new, carry))
    return carry, carry[1]

  carry, hs = jax.lax.scan(step, (zero, zero), (x, mask), reverse=reverse)
  return hs, carry


def attend(h: jax.Array, keys: jax.Array, memory: jax.Array,
           mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Luong "general" attention of h (B, H) over the source: weights (B, S)
  and context (B, 2H). Padding gets no weight (an all-padding source gets
  uniform weights rather than NaN)."""
  scores = jnp.einsum("bh,bsh->bs", h, keys)
  weights = jax.nn.softmax(jnp.where(mask, scores, -1e30), axis=-1)
  return weights, jnp.einsum("bs,bsk->bk", weights, memory)


@dataclasses.dataclass(frozen=True)
class LSTMSeq2SeqSettings(Seq2SeqSettings):
  """The LSTM encoder-decoder's settings: `config.model` less `kind`."""
  num_layers: int
  embed_dim: int  # D
  hidden_size: int  # H
  dropout: float
  attention: bool  # False: Sutskever's encoder-decoder
  input_feeding: bool  # with attention: h~_{t-1} joins the input


class LSTMSeq2Seq(Seq2SeqModel):
  """Bidirectional LSTM encoder, LSTM decoder with Luong attention.

  `settings` is `config.model` less `kind` (see configs/echo_lstm.py).
  """
  kind: ClassVar[str] = "lstm_s2s"
  Settings: ClassVar[type] = LSTMSeq2SeqSettings

  settings: LSTMSeq2SeqSettings

  @property
  def feed_size(self) -> int:
    """Width of the fed-back h~: H, or 0 (an empty input) without it."""
    s = self.settings
    return s.hidden_size if s.attention and s.input_feeding else 0

  def setup(self):
    s = self.settings
    H, D, L = s.hidden_size, s.embed_dim, s.num_layers
    self.embed = nn.Embed(self.vocab_size, D,
                          embedding_init=nn.initializers.normal(1.0))
    self.forward_layers = [LSTMWeights(D if i == 0 else 2 * H, H)
                           for i in range(L)]
    self.backward_layers = [LSTMWeights(D if i == 0 else 2 * H, H)
                            for i in range(L)]
    self.bridge_c = [nn.Dense(H) for _ in range(L)]
    self.bridge_h = [nn.Dense(H) for _ in range(L)]
    self.decoder_layers = [
        LSTMWeights(D + self.feed_size if i == 0 else H, H) for i in range(L)]
    if s.attention:
      self.score = nn.Dense(H, use_bias=False)  # W_a: m_s (2H) -> key (H)
      self.combine = self.param("combine", nn.initializers.lecun_normal(),
                                (3 * H, H))  # W_c: [c_t; h_t] -> h~_t
    self.drop = nn.Dropout(s.dropout)
    self.head = nn.Dense(self.vocab_size)

  def encode(self, src: jax.Array, train: bool = False) -> dict:
    """The annotations, their keys, the padding mask, and the decoder's
    initial (c, h) per layer; `attention` False keeps only the latter."""
    mask = (src != PAD_ID).T  # (S, B)
    x = self.drop(self.embed(src.T), deterministic=not train)  # (S, B, D)
    init = []
    for i in range(self.settings.num_layers):
      fwd, (cf, hf) = masked_lstm(self.forward_layers[i](), x, mask)
      bwd, (cb, hb) = masked_lstm(self.backward_layers[i](), x, mask,
                                  reverse=True)
      x = self.drop(jnp.concatenate([fwd, bwd], axis=-1),
                    deterministic=not train)  # (S, B, 2H)
      init.append((self.bridge_c[i](jnp.concatenate([cf, cb], axis=-1)),
                   jnp.tanh(self.bridge_h[i](jnp.concatenate([hf, hb], -1)))))
    memory: dict[str, Any] = {"init": tuple(init)}
    if self.settings.attention:
      annotations = x.transpose(1, 0, 2)  # (B, S, 2H)
      memory.update(annotations=annotations, keys=self.score(annotations),
                    mask=mask.T)
    return memory

  def initial_state(self, memory: dict) -> dict:
    """Before BOS: the bridged encoder states, no h~ fed back yet, and the
    memory the decoder reads at every step. Needs no parameters."""
    h = memory["init"][0][1]  # (B, H)
    state = dict(memory, layers=memory["init"],
                 feed=jnp.zeros((h.shape[0], self.feed_size), h.dtype))
    del state["init"]
    return state

  def decode(self, tokens: jax.Array, state: dict, train: bool = False
             ) -> tuple[jax.Array, dict, jax.Array]:
    """The decoder over tokens (B, T) from `state`: what the head reads
    (T, B, H), the new state, the attention weights (T, B, S) (S = 0
    without attention)."""
    x = self.drop(self.embed(tokens.T), deterministic=not train)  # (T, B, D)
    weights = [layer() for layer in self.decoder_layers]
    attends = self.settings.attention
    combine = self.combine if attends else None

    def step(carry, x_t):
      layers, feed = carry
      inputs, new_layers = jnp.concatenate([x_t, feed], axis=-1), []
      for w, layer_state in zip(weights, layers):
        layer_state = lstm_cell(w, inputs, layer_state)
        new_layers.append(layer_state)
        inputs = layer_state[1]
      h = inputs  # (B, H), the top layer's output
      if not attends:
        return (tuple(new_layers), feed), (h, jnp.zeros((h.shape[0], 0)))
      a, context = attend(h, state["keys"], state["annotations"],
                          state["mask"])
      out = jnp.tanh(jnp.concatenate([context, h], axis=-1) @ combine)
      return (tuple(new_layers), out[:, :self.feed_size]), (out, a)

    (layers, feed), (outs, attention) = jax.lax.scan(
        step, (state["layers"], state["feed"]), x)
    return outs, dict(state, layers=layers, feed=feed), attention

  def extend(self, tokens: jax.Array, state: dict, train: bool = False
             ) -> tuple[jax.Array, dict]:
    outs, state, _ = self.decode(tokens, state, train)
    logits = self.head(self.drop(outs, deterministic=not train))  # (T, B, V)
    return logits.transpose(1, 0, 2).astype(jnp.float32), state

  def cross_attention(self, src: jax.Array, tgt_in: jax.Array) -> jax.Array:
    """Weights (B, 1, 1, T, S): one layer, one head."""
    if not self.settings.attention:
      raise NotImplementedError(
          "this lstm_s2s model has no attention to draw "
          "(config.model.attention=False: the prompt reaches its decoder "
          "only as the first state); inspect a run trained with attention")
    _, _, weights = self.decode(tgt_in,
                                self.initial_state(self.encode(src)))
    return weights.transpose(1, 0, 2)[:, None, None]  # (B, 1, 1, T, S)

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    positive(model, "embed_dim", "hidden_size")
    for name in ("attention", "input_feeding"):
      if not isinstance(model[name], bool):
        raise ConfigError(f"config.model.{name} must be True or False, got "
                          f"{model[name]!r}")

  def lookup_params(self, params) -> int:
    return count(params["embed"])
