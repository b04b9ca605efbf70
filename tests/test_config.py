"""lm_jax/config.py: the shared defaults, their checks and their listing."""

import dataclasses
import importlib
import math

import ml_collections
import pytest

from conftest import REPO
from lm_jax import config as config_lib
from lm_jax.errors import UserError
from lm_jax.models import MODELS, make_model

SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.py")
                 if not p.stem.startswith("_"))


def variants(name: str) -> list[str]:
  """A shipped config's variants, from its docstring's `Variants` list
  (one line each; `(none)` is the default)."""
  doc = importlib.import_module(f"configs.{name}").__doc__
  listed = doc.partition("\nVariants")[2].splitlines()[1:]
  names = [line.split()[0] for line in listed if line.startswith("  ")]
  assert names[0] == "(none)" and all(
      line.startswith("  ") for line in listed if line.strip()), name
  return names[1:]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_and_its_variants_validate(name):
  module = importlib.import_module(f"configs.{name}")
  assert "smoke" in variants(name)
  for arg in ("", *variants(name)):
    config = module.get_config(arg)
    config_lib.validate(config)
    # Every setting of its model is given: nothing falls back to a default.
    cls = MODELS[config.model.kind]
    assert set(config.model) - {"kind"} == set(cls.setting_names())


def test_every_model_family_declares_its_settings_without_defaults():
  """One frozen dataclass per family, every field given by the config."""
  for kind, cls in MODELS.items():
    settings = dataclasses.fields(cls.Settings)
    assert cls.Settings.__dataclass_params__.frozen, kind
    assert not [f.name for f in settings
                if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING], kind
    model_fields = {f.name for f in dataclasses.fields(cls)} - {
        "vocab_size", "parent", "name"}
    assert model_fields == {"settings"}, kind


def test_base_config_gives_every_transformer_setting():
  model = config_lib.base_config().model
  assert set(model) - {"kind"} == set(MODELS["transformer"].setting_names())


@pytest.mark.parametrize("change, message", [
    (lambda m: m.unlock().__delitem__("hidden_size"),
     "config.model lacks hidden_size for the lstm model"),
    (lambda m: m.unlock().__setitem__("num_heads", 4),
     r"settings the lstm model does not take \(num_heads\)")])
def test_a_missing_or_unknown_model_setting_is_named(change, message):
  from configs import char_lstm
  config = char_lstm.get_config("smoke")
  change(config.model)
  with pytest.raises(UserError, match=message):
    config_lib.validate(config)
  with pytest.raises(UserError, match=message):
    make_model(config.model, 10)


@pytest.mark.parametrize("key, value, message", [
    ("train.batch_size", 0, "config.train.batch_size must be a positive"),
    ("train.learning_rate", -1.0, "config.train.learning_rate must be"),
    ("train.grad_accum_steps", 3, "must be divisible by"),
    ("train.schedule", "linear", "unknown config.train.schedule"),
    ("train.optimizer", "sgd", "unknown config.train.optimizer"),
    ("train.z_loss", -1.0, "config.train.z_loss must be >= 0"),
    ("data.tokenizer", "bytes", "unknown tokenizer"),
    ("model.kind", "rnn", "unknown model kind"),
    ("model.num_heads", 3, "must be divisible by"),
    ("train.seq_len", 4096, "longer than the model's positions"),
])
def test_validate_names_the_setting_that_cannot_work(key, value, message):
  config = config_lib.base_config()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(UserError, match=message):
    config_lib.validate(config)


def test_nan_and_infinity_are_refused_by_name():
  config = config_lib.base_config()
  config.train.learning_rate = math.nan
  with pytest.raises(UserError, match="config.train.learning_rate is nan"):
    config_lib.check_finite(config)
  config.train.learning_rate = 1e-3
  config.model.dropout = math.inf
  with pytest.raises(UserError, match="config.model.dropout is inf"):
    config_lib.validate(config)


def test_describe_lists_every_key_once_with_its_comment():
  config = config_lib.base_config()
  lines = config_lib.describe(config, "configs/char_tf.py").splitlines()
  keys = [line.split(" = ")[0] for line in lines[1:]]
  flat = ml_collections.ConfigDict(config).to_dict()
  count = lambda d: sum(count(v) if isinstance(v, dict) else 1
                        for v in d.values())
  assert len(keys) == len(set(keys)) == count(flat)
  seq_len = next(line for line in lines if line.startswith("train.seq_len"))
  assert "#" not in seq_len or seq_len.split("#", 1)[1].strip()
  assert any("tokenizer" in line and "#" in line for line in lines)


def test_key_comments_reads_trailing_and_block_comments():
  source = ("  # the block\n  # above\n  c.a.b = 1\n"
            "  c.x = 2  # trailing\n  c.y = 3\n")
  assert config_lib.key_comments(source) == {"a.b": "the block above",
                                             "x": "trailing"}
