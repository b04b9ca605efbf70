"""Language models, chosen by `config.model.kind`.

Every model implements `lm_jax.models.base.LanguageModel` (next token of a
text; `lm_jax.models.mlm.MaskedLM` the hidden tokens of one) or
`lm_jax.models.seq2seq.Seq2SeqModel` (a reply to a prompt); this
registry is the one place that reads `config.model.kind`.
"""

from __future__ import annotations

import ml_collections

from lm_jax.errors import UserError
from lm_jax.models.base import ConfigError, Model
from lm_jax.models.gru import GRULM
from lm_jax.models.lstm import LSTMLM
from lm_jax.models.lstm_s2s import LSTMSeq2Seq
from lm_jax.models.mlm import MaskedLM
from lm_jax.models.transformer import TransformerLM
from lm_jax.models.transformer_s2s import TransformerSeq2Seq

MODELS: dict[str, type[Model]] = {
    cls.kind: cls for cls in (TransformerLM, LSTMLM, GRULM,
                              TransformerSeq2Seq, LSTMSeq2Seq, MaskedLM)}


def model_class(kind: str) -> type[Model]:
  """The class of config.model.kind `kind`."""
  if kind not in MODELS:
    raise UserError(f"unknown model kind {kind!r}: set config.model.kind to "
                    f"one of {sorted(MODELS)}")
  return MODELS[kind]


def settings_fields(model_config: ml_collections.ConfigDict) -> dict:
  """config.model as the fields of its model's settings (less `kind`).

  Every field must be given: a missing or unknown key is a UserError naming
  it, never a default (an old config.json is upgraded where it is read:
  lm_jax/runs/rundir.py: upgrade).
  """
  fields = dict(model_config)
  cls = model_class(fields.pop("kind", None))
  names = cls.setting_names()
  extra = sorted(set(fields) - set(names))
  if extra:
    raise UserError(
        f"config.model has settings the {cls.kind} model does not take "
        f"({', '.join(extra)}); start from a config file written for it, "
        "e.g. configs/char_lstm.py for an LSTM")
  missing = [n for n in names if n not in fields]
  if missing:
    raise UserError(
        f"config.model lacks {', '.join(missing)} for the {cls.kind} model; "
        "start from a config file written for it (configs/)")
  return fields


def check_config(model_config: ml_collections.ConfigDict,
                 train_config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first model setting that cannot work."""
  cls = model_class(model_config.get("kind"))
  full = ml_collections.ConfigDict(settings_fields(model_config))
  try:
    cls.check_config(full, train_config)
  except ConfigError as e:
    raise UserError(str(e)) from None


def make_model(model_config: ml_collections.ConfigDict,
               vocab_size: int) -> Model:
  """The model named by `model_config.kind`, its settings taken from the
  config (`settings_fields`)."""
  cls = model_class(model_config.get("kind"))
  return cls.from_config(settings_fields(model_config), vocab_size)
