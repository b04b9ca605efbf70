import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.models import make_model
from lm_jax.models.transformer import stack_layers, unstack_layers

from conftest import assert_reordered_close

V = 11


def _model(config, **overrides):
  config.model.update(overrides)
  return make_model(config.model, V)


def _init(model, T=16):
  return model.init(jax.random.key(0), jnp.zeros((2, T), jnp.int32))["params"]


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_causality(smoke_config, tie):
  """Changing tokens after t never changes the logits at or before t."""
  model = _model(smoke_config, tie_embeddings=tie)
  params = _init(model)
  tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, V)
  base = model.apply({"params": params}, tokens)
  for t in range(15):
    changed = tokens.at[0, t + 1:].set((tokens[0, t + 1:] + 1) % V)
    out = model.apply({"params": params}, changed)
    np.testing.assert_allclose(out[0, :t + 1], base[0, :t + 1], atol=1e-6)
    assert not np.allclose(out[0, t + 1], base[0, t + 1])


@pytest.mark.slow
def test_logits_shape_and_param_count(smoke_config):
  model = _model(smoke_config, tie_embeddings=False)
  params = _init(model)
  D, L, T = 32, 2, smoke_config.model.max_len
  per_block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + \
      (4 * D * D + 4 * D) + (4 * D * D + D)
  expected = V * D + T * D + L * per_block + 2 * D + D * V
  assert sum(x.size for x in jax.tree.leaves(params)) == expected
  logits = model.apply({"params": params}, jnp.zeros((3, 7), jnp.int32))
  assert logits.shape == (3, 7, V) and logits.dtype == jnp.float32


@pytest.mark.slow
def test_scan_over_layers_equals_loop(smoke_config):
  loop = _model(smoke_config.copy_and_resolve_references(), scan_layers=False)
  scan = _model(smoke_config.copy_and_resolve_references(), scan_layers=True)
  params = _init(loop)
  stacked = stack_layers(params, loop.settings.num_layers)
  # The scanned model's own init has the same tree as the stacked params.
  assert jax.tree.structure(_init(scan)) == jax.tree.structure(stacked)
  tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, V)
  np.testing.assert_allclose(scan.apply({"params": stacked}, tokens),
                             loop.apply({"params": params}, tokens),
                             rtol=1e-5, atol=1e-5)
  back = unstack_layers(stacked, loop.settings.num_layers)
  jax.tree.map(np.testing.assert_array_equal, back, params)


@pytest.mark.slow
def test_dropout_only_in_training(smoke_config):
  model = _model(smoke_config, dropout=0.5)
  params = _init(model)
  tokens = jnp.ones((2, 16), jnp.int32)
  a = model.apply({"params": params}, tokens)
  np.testing.assert_array_equal(a, model.apply({"params": params}, tokens))
  b = model.apply({"params": params}, tokens, train=True,
                  rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(a, b)


@pytest.mark.slow
def test_bfloat16_tracks_float32(smoke_config):
  f32 = _model(smoke_config.copy_and_resolve_references())
  bf16 = _model(smoke_config.copy_and_resolve_references(), dtype="bfloat16")
  params = _init(f32)
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, V)
  a = f32.apply({"params": params}, tokens)
  b = bf16.apply({"params": params}, tokens)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_remat_recomputes_the_same_gradients(smoke_config, scan):
  """remat keeps fewer activations for the backward pass (its saved
  residuals shrink) and gives the same loss and gradients, dropout too."""
  plain = _model(smoke_config.copy_and_resolve_references(), scan_layers=scan,
                 dropout=0.1)
  remat = plain.with_settings(remat=True)
  params = _init(plain)
  tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, V)

  def loss(params, model):
    logits = model.apply({"params": params}, tokens, train=True,
                         rngs={"dropout": jax.random.key(3)})
    return jax.nn.log_softmax(logits).mean()

  (a, ga), (b, gb) = (jax.value_and_grad(loss)(params, m)
                      for m in (plain, remat))
  # Recomputed activations are fused and summed in another order: equal to
  # the rounding of the sums over the 2 x 16 tokens.
  assert_reordered_close(b, a, terms=tokens.size)
  assert_reordered_close(gb, ga, terms=tokens.size)
  saved = lambda m: sum(
      r.size for r in jax.tree.leaves(jax.vjp(lambda p: loss(p, m),
                                              params)[1]))
  assert saved(remat) < saved(plain)
