"""lm_jax/views/summary.py: the model summary's parameter, FLOP and memory
estimates against XLA's own."""

import jax
import jax.numpy as jnp
import pytest

from configs import char_tf
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.training import steps
from lm_jax.views import summary


def _xla_train_costs(config, vocab_size, batch_size):
  """(FLOPs per token, bytes) XLA reports for one compiled train step."""
  model = make_model(config.model, vocab_size)
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  x = jnp.zeros((batch_size, config.train.seq_len), jnp.int32)
  compiled = jax.jit(steps.train_step).lower(
      state, x, x, jax.random.key(0)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  memory = compiled.memory_analysis()
  return (state.params, cost["flops"] / x.size,
          memory.argument_size_in_bytes + memory.temp_size_in_bytes)


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_summary_estimates_match_xla(tie):
  config = char_tf.get_config("smoke")
  config.model.update(num_layers=2, d_model=64, num_heads=4, max_len=64,
                      tie_embeddings=tie)
  config.train.seq_len, config.train.batch_size, V = 64, 4, 65
  params, xla_flops, xla_bytes = _xla_train_costs(config, V, 4)
  rows = summary.params_by_module(params)
  assert sum(rows.values()) == summary.count(params)
  assert {"embed", "pos_embed", "block_*/attn", "block_*/mlp"} <= rows.keys()
  assert rows["block_*/attn"] == 2 * (64 * 3 * 64 + 3 * 64 + 64 * 64 + 64)
  model = make_model(config.model, V)
  flops = model.train_flops_per_token(params, 64)
  assert flops == pytest.approx(xla_flops, rel=0.10)
  mem = summary.memory_bytes(model, params, 4, 64)
  assert sum(mem.values()) == pytest.approx(xla_bytes, rel=0.5)
  text = summary.model_summary(model, params, config.train)
  assert len(text.splitlines()) <= 12


@pytest.mark.slow
def test_summary_estimates_match_xla_with_recipe_options():
  """SwiGLU's three matrices, rope (no table, no parameters), QK-norm and
  RMSNorm: the 6N + 12LTD formula still tracks XLA's count."""
  config = char_tf.get_config("smoke")
  config.model.update(num_layers=2, d_model=64, num_heads=4, max_len=64,
                      tie_embeddings=False, position="rope", norm="rmsnorm",
                      qk_norm=True, mlp="swiglu", logit_softcap=15.0)
  config.train.seq_len, config.train.batch_size, V = 64, 4, 65
  params, xla_flops, xla_bytes = _xla_train_costs(config, V, 4)
  assert "pos_embed" not in params
  model = make_model(config.model, V)
  assert model.train_flops_per_token(params, 64) == pytest.approx(
      xla_flops, rel=0.10)
  mem = summary.memory_bytes(model, params, 4, 64)
  assert sum(mem.values()) == pytest.approx(xla_bytes, rel=0.5)


def test_check_fits_counts_activations(smoke_config):
  model = make_model(smoke_config.model, 64)
  summary.check_fits(model, smoke_config.train)  # the smoke run fits
  smoke_config.train.batch_size = 10**8
  with pytest.raises(UserError, match=r"activations [\d,.]+ GiB at batch "
                     "100000000"):
    summary.check_fits(model, smoke_config.train)
