"""Inside the model: what it computes over a prompt, drawn as heat maps.

Each model says what it shows (`LanguageModel.internals`): attention weights
per layer and head for a Transformer, gate activity and cell state per layer
for a recurrent model. Here that grid is checked against the prompt and
drawn, one row per layer and one column per panel.
"""

from __future__ import annotations

import pathlib

import numpy as np

from lm_jax.errors import UserError
from lm_jax.models.base import Internals
from lm_jax.views import plotting
from lm_jax.views.labels import tick_labels

CELL_INCHES, DPI = 2.5, 100  # each panel is a 250 x 250 pixel square
LABELLED = 32  # tokens up to which each position is labelled
UNITS = 64  # hidden units drawn per panel at most


def model_internals(model, params, tokens: np.ndarray) -> Internals:
  """`model.internals` over one prompt `tokens` (T,), its length checked."""
  limit = model.context_length
  if not 0 < len(tokens) <= (limit or len(tokens)):
    raise UserError(f"the prompt has {len(tokens)} tokens; give 1 to "
                    f"{limit} (the model's context)")
  try:
    return model.internals(params, np.asarray(tokens))
  except NotImplementedError as e:  # its message, if any, says why
    raise UserError(str(e) or f"the {model.kind} model has nothing to show "
                    "inside; inspect a Transformer or LSTM run") from None


MAX_BLANKS = 8  # bar charts drawn by plot_distributions


def plot_internals(internals: Internals, tokens: list[str],
                   out: str | pathlib.Path,
                   row_tokens: list[str] | None = None) -> pathlib.Path:
  """A grid of heat maps, one row per layer, one column per panel.

  Rows of every map are prompt positions; columns are prompt positions
  too (attention: which earlier token each position attends to) or hidden
  units (the first `UNITS`). With `row_tokens` the rows are those tokens
  instead (a reply, attending to the prompt's tokens).
  """
  from matplotlib.figure import Figure  # no pyplot: no display, no state

  values = internals.values
  L, P, T, _ = values.shape
  by_token = internals.columns == "tokens"
  fig = Figure(figsize=(P * CELL_INCHES, L * CELL_INCHES), dpi=DPI)
  axes = fig.subplots(L, P, squeeze=False)
  rows = tokens if row_tokens is None else row_tokens
  # Each axis is labelled up to LABELLED tokens (a long reply leaves the
  # prompt's labels).
  both, families = tick_labels(tokens + rows)
  labels = both[:len(tokens)] if len(tokens) <= LABELLED else None
  row_labels = both[len(tokens):] if T <= LABELLED else None
  for layer in range(L):
    for panel in range(P):
      ax = axes[layer, panel]
      maps = values[layer, panel] if by_token else \
          values[layer, panel, :, :UNITS]
      bound = np.abs(maps).max() if internals.signed[panel] else 1
      ax.imshow(maps, cmap="RdBu_r" if internals.signed[panel] else "viridis",
                aspect="equal" if by_token else "auto",
                vmin=-bound if internals.signed[panel] else 0, vmax=bound)
      ax.set_title(f"layer {layer} {internals.panels[panel]}", fontsize=8)
      ax.set_yticks(range(T), row_labels or [""] * T, fontsize=6,
                    family=families)
      if by_token and labels:
        ax.set_xticks(range(len(labels)), labels, fontsize=6, family=families)
      else:
        ax.set_xticks([])
  width = values.shape[-1]
  xlabel = ("attended position (key)" if by_token else
            f"hidden unit (first {min(UNITS, width)} of {width})")
  ylabel = "query position" if by_token else "prompt position"
  if row_tokens is not None:
    xlabel, ylabel = "prompt (source)", "reply token being written"
  fig.supxlabel(xlabel, fontsize=8)
  fig.supylabel(ylabel, fontsize=8)
  fig.tight_layout()
  return plotting.save_figure(fig, plotting.figure_path(out))


def plot_distributions(blanks: list[tuple[int, list]], tokens: list[str],
                       out: str | pathlib.Path) -> pathlib.Path:
  """One bar chart per blank (up to MAX_BLANKS): its likeliest tokens and
  their probabilities, titled with the blank's position and the tokens
  around it."""
  from matplotlib.figure import Figure

  shown = blanks[:MAX_BLANKS]
  fig = Figure(figsize=(4.0 * len(shown), 3.2), dpi=DPI)
  axes = fig.subplots(1, len(shown), squeeze=False)[0]
  for ax, (pos, candidates) in zip(axes, shown):
    labels = [repr(text)[1:-1] or " " for text, _ in candidates]
    probs = [p for _, p in candidates]
    ax.barh(range(len(probs)), probs, color="C0")
    ax.set_yticks(range(len(labels)), labels, fontsize=8,
                  family=tick_labels(labels)[1])
    ax.invert_yaxis()  # the likeliest on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=8)
    context = "".join(tokens[max(0, pos - 6):pos]) + "_" + "".join(
        tokens[pos + 1:pos + 7])
    ax.set_title(f"blank at token {pos}: {context!r}", fontsize=8)
  fig.tight_layout()
  return plotting.save_figure(fig, plotting.figure_path(out))
