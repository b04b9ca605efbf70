"""The masked LM (lm_jax/models/mlm.py): a bidirectional encoder that sees
the future, and refuses causal-only attention."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from configs import char_mlm
from lm_jax.errors import UserError
from lm_jax.models import check_config, make_model

# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


def test_encoder_sees_the_future_causal_model_does_not():
  config = char_mlm.get_config("smoke")
  mlm = make_model(config.model, 40)
  causal = make_model(ml_collections.ConfigDict(
      {**config.model.to_dict(), "kind": "transformer"}), 40)
  params = jax.jit(mlm.init)(jax.random.key(0),
                             jnp.zeros((1, 8), jnp.int32))["params"]
  tokens = jnp.arange(5, 13)[None]  # (1, 8)
  later = tokens.at[0, 6].set(20)  # change position 6
  for model, sees in ((mlm, True), (causal, False)):
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, later)
    assert bool(jnp.any(jnp.abs(a[0, :6] - b[0, :6]) > 1e-6)) == sees


def test_blocked_attention_refused_for_the_encoder():
  config = char_mlm.get_config("smoke")
  config.model.attention = "blocked"
  with pytest.raises(UserError, match="causal only"):
    check_config(config.model, config.train)
