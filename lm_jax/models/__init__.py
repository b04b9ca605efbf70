"""Language models, chosen by `config.model.kind`.

Every model implements `lm_jax.models.base.LanguageModel` (next token of a
text) or `lm_jax.models.seq2seq.Seq2SeqModel` (a reply to a prompt); this
registry is the one place that reads `config.model.kind`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lm_jax.errors import UserError
from lm_jax.models.base import ConfigError, Model
from lm_jax.models.gru import GRULM
from lm_jax.models.lstm import LSTMLM
from lm_jax.models.lstm_s2s import LSTMSeq2Seq
from lm_jax.models.transformer import TransformerLM
from lm_jax.models.transformer_s2s import TransformerSeq2Seq

MODELS: dict[str, type[Model]] = {
    cls.kind: cls for cls in (TransformerLM, LSTMLM, GRULM,
                              TransformerSeq2Seq, LSTMSeq2Seq)}


def model_class(kind: str) -> type[Model]:
  """The class of config.model.kind `kind`."""
  if kind not in MODELS:
    raise UserError(f"unknown model kind {kind!r}: set config.model.kind to "
                    f"one of {sorted(MODELS)}")
  return MODELS[kind]


def check_config(model_config: ml_collections.ConfigDict,
                 train_config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first model setting that cannot work."""
  cls = model_class(model_config.kind)
  taken = {f.name for f in dataclasses.fields(cls)}
  extra = sorted(set(model_config) - taken - {"kind", "parent", "name"})
  if extra:
    raise UserError(
        f"config.model has settings the {cls.kind} model does not take "
        f"({', '.join(extra)}); start from a config file written for it, "
        "e.g. configs/char_lstm.py for an LSTM")
  # Fields the config leaves out (a run written before they existed) are
  # checked at the model's defaults, the values make_model will use.
  defaults = {f.name: f.default for f in dataclasses.fields(cls)
              if f.default is not dataclasses.MISSING
              and f.name not in ("parent", "name")}
  full = ml_collections.ConfigDict({**defaults, **model_config.to_dict()})
  try:
    cls.check_config(full, train_config)
  except ConfigError as e:
    raise UserError(str(e)) from None


def make_model(model_config: ml_collections.ConfigDict,
               vocab_size: int) -> Model:
  """The model named by `model_config.kind`, its fields taken from the config."""
  fields = dict(model_config)
  return model_class(fields.pop("kind"))(vocab_size=vocab_size, **fields)
