"""What the recurrent language models share: embedding, stacked layers
scanned over time, output head (lm_jax/models/lstm.py, gru.py).

Shapes in comments: B batch, T time, H hidden size, V vocabulary; inside,
activations are time-major (T, B, ...), the layout `lax.scan` walks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax.models.base import count, LanguageModel, positive


@dataclasses.dataclass(frozen=True)
class RecurrentSettings:
  """A recurrent language model's settings (the GRU's; the LSTM's add
  one): `config.model` less `kind`, declared once, every field given by
  the config file (configs/char_lstm.py, configs/char_gru.py)."""
  num_layers: int
  embed_dim: int  # D
  hidden_size: int  # H
  dropout: float  # on every layer's output, in training


class StackedRNN(LanguageModel):
  """Embedding, `num_layers` recurrent layers, output head.

  A subclass gives `layer(i)`, a module mapping (x (T, B, D), the layer's
  state, the embedding table for the first layer or None) to (outputs
  (T, B, H), new state), and `layer_state(batch_size)`, one layer's state
  before the first token. Dropout (training only) applies to the output of
  every layer, as char-rnn does: between layers and before the head.
  """
  Settings: ClassVar[type] = RecurrentSettings

  settings: RecurrentSettings

  def layer(self, i: int) -> nn.Module:
    raise NotImplementedError

  def layer_state(self, batch_size: int) -> Any:
    raise NotImplementedError

  def setup(self):
    s = self.settings
    self.embed = nn.Embed(self.vocab_size, s.embed_dim,
                          embedding_init=nn.initializers.normal(1.0))
    self.layers = [self.layer(i) for i in range(s.num_layers)]
    self.drop = nn.Dropout(s.dropout)
    self.head = nn.Dense(self.vocab_size)

  def zeros(self, batch_size: int) -> jax.Array:
    """A zero (B, H) array: what a layer's state starts from."""
    return jnp.zeros((batch_size, self.settings.hidden_size), jnp.float32)

  def initial_state(self, batch_size: int) -> tuple:
    """The state of every layer before the first token."""
    return tuple(self.layer_state(batch_size)
                 for _ in range(self.settings.num_layers))

  def extend(self, tokens: jax.Array, state: tuple, train: bool = False
             ) -> tuple[jax.Array, tuple]:
    """Continues from `state` over tokens (B, T): logits (B, T, V), new state."""
    x = tokens.T  # (T, B): the first layer looks up its own inputs
    new_state = []
    for i, (layer, layer_state) in enumerate(zip(self.layers, state)):
      x, layer_state = layer(x, layer_state,
                             self.embed.embedding if i == 0 else None)
      new_state.append(layer_state)
      if self.settings.dropout > 0:
        x = self.drop(x, deterministic=not train)
    logits = self.head(x)  # (T, B, V)
    return logits.transpose(1, 0, 2).astype(jnp.float32), tuple(new_state)

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    positive(model, "embed_dim", "hidden_size")

  def lookup_params(self, params) -> int:
    return count(params["embed"])
