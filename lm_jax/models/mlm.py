"""A bidirectional Transformer encoder for masked language modelling.

The causal model's blocks (lm_jax/models/transformer.py) without the
causal mask: every position attends to every other, so the logits at a
hidden position come from the text on both sides of it. The settings and
the parameters are the causal model's (`TransformerSettings`, the recipe
options apply); only the mask differs. It predicts the tokens its input
hides (`<mask>`), not the next token, so it has no decoding state:
generating is unmasking (lm_jax/generation/unmask.py), and its task is
"masked" (lm_jax/tasks/masked.py). docs/MASKED.md compares the two.

Attention is dense: the blocked path (lm_jax/models/attention.py) skips
the tiles above the diagonal, which here are half the work, so
`attention="blocked"` is refused rather than silently rewritten.
"""

from __future__ import annotations

from typing import ClassVar

from lm_jax.models.base import ConfigError
from lm_jax.models.transformer import TransformerLM


class MaskedLM(TransformerLM):
  """Token logits (B, T, V) at every position of tokens (B, T), each from
  the whole sequence; trained to name the tokens `<mask>` hides."""
  kind: ClassVar[str] = "mlm"
  task: ClassVar[str] = "masked"
  causal: ClassVar[bool] = False

  def initial_state(self, batch_size: int):
    raise NotImplementedError("a masked LM does not decode left to right: "
                              "it fills blanks (lm_jax/generation/unmask.py)")

  def extend(self, tokens, state, train: bool = False):
    raise NotImplementedError("a masked LM does not decode left to right: "
                              "it fills blanks (lm_jax/generation/unmask.py)")

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    if model.attention != "dense":
      raise ConfigError(
          "config.model.attention='blocked' is causal only (it skips the "
          "tiles above the diagonal, which an encoder needs); set "
          "--config.model.attention=dense for the mlm model")
