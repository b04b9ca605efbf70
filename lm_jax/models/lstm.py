"""A multi-layer LSTM language model (Flax Linen), scanned over time.

Shapes in comments: B batch, T time (sequence), D embedding width, H hidden
size, V vocabulary. Inside the model activations are time-major (T, B, ...),
the layout `lax.scan` walks.

Each layer has one input kernel (D, 4H), one recurrent kernel (H, 4H) and one
bias (4H), the gates side by side in PyTorch's order: input, forget, cell
(g), output. The input projection of all time steps is one matrix product
before the scan; inside the scan each step costs one (B, H) x (H, 4H)
product. The scan has a hand-written backward pass (`lstm_scan`) that
returns the gate gradients of all steps, so the recurrent kernel's gradient
is one large matrix product after the loop instead of T small ones inside it.
Where the input is an activation (every layer but the first),
`lstm_layer_scan` takes the input projection inside too, and the backward
pass computes both kernels' gradients as one product, [x, h_prev]^T @ dz,
faster than two (experiments/results/lstm_cpu.md).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.models.base import Internals
from lm_jax.models.recurrent import RecurrentSettings, StackedRNN

Carry = tuple[jax.Array, jax.Array]  # (c, h), each (B, H)


def _gates(z: jax.Array) -> tuple[jax.Array, ...]:
  """Pre-activations (B, 4H) -> gates i, f, g, o (B, H) each."""
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  return jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)


def lstm_cell(params: dict, x: jax.Array, carry: Carry) -> Carry:
  """One LSTM step, the textbook form: x (B, D), carry (c, h) -> (c', h')."""
  c, h = carry
  z = x @ params["input_kernel"] + h @ params["recurrent_kernel"] + \
      params["bias"]  # (B, 4H)
  i, f, g, o = _gates(z)
  c = f * c + i * g
  return c, o * jnp.tanh(c)


def forward_scan(recurrent_kernel: jax.Array, xw: jax.Array, carry: Carry):
  """The recurrence over xw (T, B, 4H): (final carry, hs (T, B, H), what the
  hand-written backward pass needs). Differentiated by JAX itself, it is
  the autodiff reference of `lstm_scan`."""
  def step(carry, xw_t):  # xw_t (B, 4H): input projection plus bias
    c, h = carry
    i, f, g, o = _gates(xw_t + h @ recurrent_kernel)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (c_new, h_new), (h_new, (c, h, i, f, g, o))

  carry, (hs, saved) = jax.lax.scan(step, carry, xw)
  return carry, hs, saved


@jax.custom_vjp
def lstm_scan(recurrent_kernel: jax.Array, xw: jax.Array, carry: Carry
              ) -> tuple[Carry, jax.Array]:
  """Runs the recurrence over xw (T, B, 4H); returns (final carry, hs (T, B, H)).

  `xw` is the input projection of every step with the bias added.
  """
  carry, hs, _ = forward_scan(recurrent_kernel, xw, carry)
  return carry, hs


def _lstm_scan_fwd(recurrent_kernel, xw, carry):
  carry, hs, saved = forward_scan(recurrent_kernel, xw, carry)
  return (carry, hs), (recurrent_kernel, saved)


def _gate_gradients(recurrent_kernel, saved, cotangents):
  """The backward scan: dz (T, B, 4H), the pre-activation gradients of
  every step, and the gradient of the initial carry."""
  (dc, dh), dhs = cotangents

  def step(carry, inputs):  # walks time backwards
    dc, dh = carry
    dh_t, (c, h, i, f, g, o) = inputs
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    dh = dh + dh_t
    dc = dc + dh * o * (1 - tanh_c**2)
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f),
                          dc * i * (1 - g**2), dh * tanh_c * o * (1 - o)],
                         axis=-1)  # (B, 4H)
    return (dc * f, dz @ recurrent_kernel.T), dz

  d_carry, dz = jax.lax.scan(step, (dc, dh), (dhs, saved), reverse=True)
  return dz, d_carry


def _lstm_scan_bwd(residuals, cotangents):
  recurrent_kernel, saved = residuals
  dz, d_carry = _gate_gradients(recurrent_kernel, saved, cotangents)
  h_prev = saved[1]  # (T, B, H): the h each step started from
  d_kernel = jnp.einsum("tbh,tbg->hg", h_prev, dz)
  return d_kernel, dz, d_carry


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


@jax.custom_vjp
def lstm_layer_scan(input_kernel, recurrent_kernel, bias, x, carry):
  """`lstm_scan` with the input projection x (T, B, D) @ input_kernel + bias
  inside: the backward pass then computes both kernels' gradients as one
  matrix product, [x, h_prev]^T @ dz."""
  return _lstm_layer_scan_fwd(input_kernel, recurrent_kernel, bias, x,
                              carry)[0]


def _lstm_layer_scan_fwd(input_kernel, recurrent_kernel, bias, x, carry):
  carry, hs, saved = forward_scan(recurrent_kernel, x @ input_kernel + bias,
                                  carry)
  return (carry, hs), (input_kernel, recurrent_kernel, x, saved)


def _lstm_layer_scan_bwd(residuals, cotangents):
  input_kernel, recurrent_kernel, x, saved = residuals
  dz, d_carry = _gate_gradients(recurrent_kernel, saved, cotangents)
  D = x.shape[-1]
  inputs = jnp.concatenate([x, saved[1]], axis=-1)  # (T, B, D + H)
  d_kernels = jnp.einsum("tbk,tbg->kg", inputs, dz)  # (D + H, 4H)
  return (d_kernels[:D], d_kernels[D:], dz.sum((0, 1)), dz @ input_kernel.T,
          d_carry)


lstm_layer_scan.defvjp(_lstm_layer_scan_fwd, _lstm_layer_scan_bwd)


class LSTMLayer(nn.Module):
  """One LSTM layer over a whole sequence.

  `hand_written_backward` False leaves the backward pass to JAX autodiff
  through the scan (for comparison: experiments/bench_lstm.py).
  """
  hidden_size: int
  hand_written_backward: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, carry: Carry,
               embedding: jax.Array | None = None
               ) -> tuple[jax.Array, Carry]:
    """x (T, B, D), carry (c, h) -> outputs hs (T, B, H), final carry.

    With `embedding` (V, D), x holds token ids (T, B) and the layer's input
    is their embeddings. Where the vocabulary is smaller than the T * B
    tokens, the input projection is then computed once per vocabulary entry
    and looked up: the same numbers (to float rounding) for fewer FLOPs,
    forward and backward.
    """
    H = self.hidden_size
    D = x.shape[-1] if embedding is None else embedding.shape[-1]
    input_kernel = self.param("input_kernel", nn.initializers.lecun_normal(),
                              (D, 4 * H))
    recurrent_kernel = self.param("recurrent_kernel",
                                  nn.initializers.orthogonal(), (H, 4 * H))
    bias = self.param("bias", forget_bias_one, (4 * H,))
    if not self.hand_written_backward:
      x = x if embedding is None else embedding[x]
      carry, hs, _ = forward_scan(recurrent_kernel, x @ input_kernel + bias,
                                  carry)
    elif embedding is not None and embedding.shape[0] < x.size:
      xw = (embedding @ input_kernel + bias)[x]  # (V, 4H) table -> (T, B, 4H)
      carry, hs = lstm_scan(recurrent_kernel, xw, carry)
    else:
      if embedding is not None:
        x = embedding[x]  # (T, B, D)
      # The input projection of all steps is one product, inside.
      carry, hs = lstm_layer_scan(input_kernel, recurrent_kernel, bias, x,
                                  carry)
    return hs, carry


def forget_bias_one(key, shape, dtype=jnp.float32):
  """Zeros, and 1 for the forget gate: remember by default at the start
  (Jozefowicz et al., 2015)."""
  del key
  H = shape[0] // 4
  return jnp.zeros(shape, dtype).at[H:2 * H].set(1.0)


@dataclasses.dataclass(frozen=True)
class LSTMSettings(RecurrentSettings):
  """The LSTM's settings: the recurrent ones and how to differentiate."""
  hand_written_backward: bool  # False: JAX autodiff (LSTMLayer)


class LSTMLM(StackedRNN):
  """Embedding, `num_layers` stacked LSTM layers, output head
  (`StackedRNN`); a layer's state is its (c, h).

  `settings` is `config.model` less `kind` (see configs/char_lstm.py).
  """
  kind: ClassVar[str] = "lstm"
  Settings: ClassVar[type] = LSTMSettings

  def layer(self, i: int) -> LSTMLayer:
    s = self.settings
    assert isinstance(s, LSTMSettings)  # StackedRNN's field, the LSTM's type
    return LSTMLayer(s.hidden_size, s.hand_written_backward, name=f"lstm_{i}")

  def layer_state(self, batch_size: int) -> Carry:
    """Zero (c, h), each (B, H)."""
    return self.zeros(batch_size), self.zeros(batch_size)

  def internals(self, params, tokens: np.ndarray) -> Internals:
    """Gates i, f, o in [0, 1] and the cell state c of every layer over the
    prompt: the textbook cell replayed step by step with the trained
    parameters, keeping every gate."""
    x = np.asarray(params["embed"]["embedding"])[np.asarray(tokens)]  # (T, D)
    layers = []
    for layer in range(self.settings.num_layers):
      p = params[f"lstm_{layer}"]
      c = h = jnp.zeros((self.settings.hidden_size,))
      panels = []
      for x_t in x:
        i, f, g, o = _gates(x_t @ p["input_kernel"]
                            + h @ p["recurrent_kernel"] + p["bias"])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        panels.append(np.stack([i, f, o, c]))  # (4, H)
      layers.append(np.stack(panels, axis=1))  # (4, T, H)
      x = np.stack([panel[2] * np.tanh(panel[3]) for panel in panels])  # h
    return Internals(np.stack(layers),  # (L, 4, T, H)
                     ("input gate", "forget gate", "output gate",
                      "cell state"), "units", (False, False, False, True))
