"""Inside the model: attention weights, or LSTM gate and cell activity.

Transformer: `CausalSelfAttention` sows its softmax weights into the
"intermediates" collection; applying the model with that collection mutable
returns them next to the logits (the parameters and the logits are
unchanged). LSTM: the textbook cell (`lstm.lstm_cell`'s math) is replayed
step by step over the prompt with the trained parameters, keeping every gate.
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lm_jax.errors import UserError
from lm_jax.models.lstm import LSTMLM, _gates
from lm_jax.models.transformer import TransformerLM, unstack_layers

CELL_INCHES, DPI = 2.5, 100  # each head's map is a 250 x 250 pixel square


def attention_weights(model: nn.Module, params, tokens: np.ndarray
                      ) -> np.ndarray:
  """Attention weights (L, H, T, T) of one prompt `tokens` (T,).

  Row q of a map is how position q spreads its attention over positions
  0..q; each row sums to 1.
  """
  if not isinstance(model, TransformerLM):
    raise UserError(f"attention maps need a Transformer run; this run's model "
                    f"is {type(model).__name__}")
  if not 0 < len(tokens) <= model.max_len:
    raise UserError(f"the prompt has {len(tokens)} tokens; give 1 to "
                    f"{model.max_len} (the model's context)")
  if model.scan_layers:  # sow inside nn.scan would need its own axis
    params = unstack_layers(params, model.num_layers)
    model = model.clone(scan_layers=False)
  _, state = model.apply({"params": params}, jnp.asarray(tokens)[None],
                         mutable=["intermediates"])
  layers = state["intermediates"]
  return np.stack([np.asarray(layers[f"block_{i}"]["attn"]["attention"][0][0])
                   for i in range(model.num_layers)])  # (L, H, T, T)


def _label(token: str) -> str:
  """A visible tick label for a token: newline and space shown as symbols."""
  return token.replace("\n", "\u23ce").replace(" ", "\u2423")


def plot_attention(weights: np.ndarray, tokens: list[str],
                   out: str | pathlib.Path) -> pathlib.Path:
  """A grid of heat maps, one row per layer, one column per head."""
  from matplotlib.figure import Figure  # no pyplot: no display, no state

  L, H, T, _ = weights.shape
  fig = Figure(figsize=(H * CELL_INCHES, L * CELL_INCHES), dpi=DPI)
  axes = fig.subplots(L, H, squeeze=False)
  labels = [_label(t) for t in tokens] if T <= 32 else None
  for layer in range(L):
    for head in range(H):
      ax = axes[layer, head]
      ax.imshow(weights[layer, head], cmap="viridis", vmin=0, vmax=1)
      ax.set_title(f"layer {layer} head {head}", fontsize=8)
      if labels:
        ax.set_xticks(range(T), labels, fontsize=6)
        ax.set_yticks(range(T), labels, fontsize=6)
      else:
        ax.set_xticks([])
        ax.set_yticks([])
  return _save(fig, "attended position (key)", "query position", out)


def _save(fig, xlabel: str, ylabel: str, out: str | pathlib.Path
          ) -> pathlib.Path:
  """Labels the whole grid and writes it as a PNG."""
  fig.supxlabel(xlabel, fontsize=8)
  fig.supylabel(ylabel, fontsize=8)
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out)
  return out


LSTM_PANELS = ("input gate", "forget gate", "output gate", "cell state")


def lstm_activity(model: nn.Module, params, tokens: np.ndarray) -> np.ndarray:
  """Gates and cell of every layer over a prompt: (L, 4, T, H).

  Panels in LSTM_PANELS order: i, f, o in [0, 1] and the cell state c.
  """
  if not isinstance(model, LSTMLM):
    raise UserError(f"gate plots need an LSTM run; this run's model is "
                    f"{type(model).__name__}")
  x = np.asarray(params["embed"]["embedding"])[np.asarray(tokens)]  # (T, D)
  layers = []
  for layer in range(model.num_layers):
    p = params[f"lstm_{layer}"]
    c = h = jnp.zeros((model.hidden_size,))
    panels = []
    for x_t in x:
      i, f, g, o = _gates(x_t @ p["input_kernel"] + h @ p["recurrent_kernel"]
                          + p["bias"])
      c = f * c + i * g
      h = o * jnp.tanh(c)
      panels.append(np.stack([i, f, o, c]))  # (4, H)
    layers.append(np.stack(panels, axis=1))  # (4, T, H)
    x = np.stack([panel[2] * np.tanh(panel[3]) for panel in panels])  # h
  return np.stack(layers)  # (L, 4, T, H)


def plot_lstm_activity(activity: np.ndarray, tokens: list[str],
                       out: str | pathlib.Path, units: int = 64
                       ) -> pathlib.Path:
  """One row per layer, one column per gate/cell: time down, units across."""
  from matplotlib.figure import Figure

  L, P, T, H = activity.shape
  fig = Figure(figsize=(P * CELL_INCHES, L * CELL_INCHES), dpi=DPI)
  axes = fig.subplots(L, P, squeeze=False)
  for layer in range(L):
    for panel in range(P):
      ax = axes[layer, panel]
      values = activity[layer, panel, :, :units]  # (T, units)
      cell = LSTM_PANELS[panel] == "cell state"
      ax.imshow(values, cmap="RdBu_r" if cell else "viridis", aspect="auto",
                vmin=-np.abs(values).max() if cell else 0,
                vmax=np.abs(values).max() if cell else 1)
      ax.set_title(f"layer {layer} {LSTM_PANELS[panel]}", fontsize=8)
      ax.set_xticks([])
      ax.set_yticks(range(T), [_label(t) for t in tokens] if T <= 32 else
                    [""] * T, fontsize=6)
  return _save(fig, f"hidden unit (first {min(units, H)} of {H})",
               "prompt position", out)
