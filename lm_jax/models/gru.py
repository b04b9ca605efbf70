"""A multi-layer GRU language model (Flax Linen), scanned over time.

Shapes in comments: B batch, T time (sequence), D embedding width, H hidden
size, V vocabulary. Inside the model activations are time-major (T, B, ...),
the layout `lax.scan` walks.

The cell is PyTorch's `nn.GRU` (Cho et al., 2014, with the reset gate
applied after the recurrent product):
    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)     reset gate
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)     update gate
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))  candidate
    h' = (1 - z) * n + z * h
Each layer keeps the three gates side by side in one input kernel (D, 3H),
one recurrent kernel (H, 3H) and two biases (3H), in PyTorch's order r, z,
n. The input projection of all time steps is one matrix product before the
scan; each step inside costs one (B, H) x (H, 3H) product. Gradients come
from JAX's autodiff of the scan.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.models.base import Internals
from lm_jax.models.recurrent import StackedRNN


def gru_step(recurrent_kernel: jax.Array, recurrent_bias: jax.Array,
             xw: jax.Array, h: jax.Array) -> tuple[jax.Array, ...]:
  """One step from the input projection xw (B, 3H) (biases added) and h
  (B, H): the gates r, z, the candidate n and the new h, each (B, H)."""
  hw = h @ recurrent_kernel + recurrent_bias  # (B, 3H)
  xr, xz, xn = jnp.split(xw, 3, axis=-1)
  hr, hz, hn = jnp.split(hw, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return r, z, n, (1 - z) * n + z * h


class GRULayer(nn.Module):
  """One GRU layer over a whole sequence."""
  hidden_size: int

  @nn.compact
  def __call__(self, x: jax.Array, h: jax.Array,
               embedding: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """x (T, B, D), h (B, H) -> outputs hs (T, B, H), final h.

    With `embedding` (V, D), x holds token ids (T, B); where the vocabulary
    is smaller than the T * B tokens the input projection is computed once
    per vocabulary entry and looked up (as in lm_jax/models/lstm.py).
    """
    H = self.hidden_size
    D = x.shape[-1] if embedding is None else embedding.shape[-1]
    input_kernel = self.param("input_kernel", nn.initializers.lecun_normal(),
                              (D, 3 * H))
    recurrent_kernel = self.param("recurrent_kernel",
                                  nn.initializers.orthogonal(), (H, 3 * H))
    input_bias = self.param("input_bias", nn.initializers.zeros, (3 * H,))
    recurrent_bias = self.param("recurrent_bias", nn.initializers.zeros,
                                (3 * H,))
    if embedding is not None and embedding.shape[0] < x.size:
      xw = (embedding @ input_kernel + input_bias)[x]  # (V, 3H) -> (T, B, 3H)
    else:
      if embedding is not None:
        x = embedding[x]  # (T, B, D)
      xw = x @ input_kernel + input_bias  # all steps in one product

    def step(h, xw_t):
      h = gru_step(recurrent_kernel, recurrent_bias, xw_t, h)[-1]
      return h, h

    h, hs = jax.lax.scan(step, h, xw)
    return hs, h


class GRULM(StackedRNN):
  """Embedding, `num_layers` stacked GRU layers, output head
  (`StackedRNN`); a layer's state is its h.

  `settings` is `config.model` less `kind` (`RecurrentSettings`; see
  configs/char_gru.py).
  """
  kind: ClassVar[str] = "gru"

  def layer(self, i: int) -> GRULayer:
    return GRULayer(self.settings.hidden_size, name=f"gru_{i}")

  def layer_state(self, batch_size: int) -> jax.Array:
    """Zero h (B, H)."""
    return self.zeros(batch_size)

  def internals(self, params, tokens: np.ndarray) -> Internals:
    """The reset and update gates in [0, 1] and the hidden state of every
    layer over the prompt, replayed step by step with `gru_step`."""
    x = np.asarray(params["embed"]["embedding"])[np.asarray(tokens)]  # (T, D)
    layers = []
    for layer in range(self.settings.num_layers):
      p = params[f"gru_{layer}"]
      h = jnp.zeros((self.settings.hidden_size,))
      panels = []
      for x_t in x:
        r, z, _, h = gru_step(p["recurrent_kernel"], p["recurrent_bias"],
                              x_t @ p["input_kernel"] + p["input_bias"], h)
        panels.append(np.stack([r, z, h]))  # (3, H)
      layers.append(np.stack(panels, axis=1))  # (3, T, H)
      x = np.stack([panel[2] for panel in panels])  # h: the next layer's input
    return Internals(np.stack(layers),  # (L, 3, T, H)
                     ("reset gate", "update gate", "hidden state"), "units",
                     (False, False, True))
