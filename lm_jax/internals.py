"""Inside the model: the attention weights of every layer and head.

`CausalSelfAttention` sows its softmax weights into the "intermediates"
collection; applying the model with that collection mutable returns them
next to the logits (the parameters and the logits are unchanged).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lm_jax.errors import UserError
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
  fig.supxlabel("attended position (key)", fontsize=8)
  fig.supylabel("query position", fontsize=8)
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out)
  return out
