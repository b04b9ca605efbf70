"""Language models, chosen by `config.model.kind`."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from lm_jax.errors import UserError
from lm_jax.models.lstm import LSTMLM
from lm_jax.models.transformer import TransformerLM

MODELS: dict[str, type[nn.Module]] = {"transformer": TransformerLM,
                                      "lstm": LSTMLM}


def make_model(model_config: ml_collections.ConfigDict,
               vocab_size: int) -> nn.Module:
  """The model named by `model_config.kind`, its fields taken from the config."""
  fields = dict(model_config)
  kind = fields.pop("kind")
  if kind not in MODELS:
    raise UserError(f"unknown model kind {kind!r}: set config.model.kind to "
                    f"one of {sorted(MODELS)}")
  return MODELS[kind](vocab_size=vocab_size, **fields)
