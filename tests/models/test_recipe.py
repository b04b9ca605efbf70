"""The Transformer recipe options (lm_jax/models/recipe.py) and the z-loss.

Each option does what its formula says, is refused in one line when set
wrong, and composes with cached decoding (past the window), scanned layers,
blocked attention and bf16.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lm_jax import config as config_lib
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.models import check_config, make_model, recipe
from lm_jax.models.base import count
from lm_jax.models.transformer import MLP, stack_layers
from lm_jax.training import losses, steps

from conftest import assert_reordered_close

V = 11
ALL = dict(position="rope", norm="rmsnorm", qk_norm=True, mlp="swiglu",
           zero_init_proj=True, logit_softcap=15.0, tie_embeddings=False)


def _model(config, **overrides):
  """The smoke Transformer (D 32, 2 heads, W 32) with `overrides`, and its
  initial parameters."""
  config.model.update(overrides)
  model = make_model(config.model, V)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return model, params["params"]


def _apply(model, params, x, **kwargs):
  """model.apply, jitted: one compile beats op-by-op dispatch here."""
  return jax.jit(lambda p, x: model.apply({"params": p}, x, **kwargs))(
      params, x)


def _randomised(params, seed=5):
  """Unit-normal parameters: greedy decoding then varies its tokens."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


def _tokens(T=16, seed=1):
  return jax.random.randint(jax.random.key(seed), (2, T), 0, V)


def test_rope_scores_depend_only_on_relative_position():
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 2, 12, 16))
  scores = lambda m, n: jnp.einsum("bhqk,bhtk->bhqt", recipe.rotary(q, m),
                                   recipe.rotary(k, n))
  at = jnp.arange(12)
  base = scores(at, at)
  np.testing.assert_allclose(scores(at + 37, at + 37), base, atol=1e-4)
  np.testing.assert_allclose(scores(at + 200, at + 200), base, atol=1e-4)
  assert not np.allclose(scores(at + 3, at), base, atol=1e-2)  # offset counts
  assert not np.allclose(base, jnp.einsum("bhqk,bhtk->bhqt", q, k), atol=1e-2)
  # A rotation: norms are kept.
  np.testing.assert_allclose(jnp.linalg.norm(recipe.rotary(q, at + 5), axis=-1),
                             jnp.linalg.norm(q, axis=-1), rtol=1e-5)


@pytest.mark.slow
def test_cached_decoding_equals_full_recomputation(smoke_config):
  """Past max_len (32) too, where sampling slides the window and prefills
  the kept tokens again from position 0 (with rope: rotated from 0)."""
  model, params = _model(smoke_config, **ALL)
  params = _randomised(params)
  prompt = _tokens(45, seed=3)
  greedy = sampling.SamplingOptions(max_new_tokens=70, temperature=0)
  cached = sampling.generate(params, model, prompt, jax.random.key(0), greedy)
  full = sampling.generate_uncached(params, model, prompt, jax.random.key(0),
                                    greedy)
  np.testing.assert_array_equal(cached, full)
  assert len(np.unique(cached)) > 1


@pytest.mark.slow
def test_scanned_blocked_cached_and_bf16_equal_the_plain_loop(smoke_config):
  """All options at once: layers scanned, attention blocked (tiles of 8),
  text fed in two chunks (the second attends to the cache), against the
  dense loop over layers on the whole text; and bf16 products."""
  loop, params = _model(smoke_config, **ALL)
  params = _randomised(params)
  fast = loop.with_settings(scan_layers=True, attention="blocked", attention_tile=8,
                    dtype="bfloat16")
  stacked = stack_layers(params, 2)
  x = _tokens(32)
  full = _apply(loop, params, x)
  f32 = fast.with_settings(dtype="float32")
  np.testing.assert_allclose(_apply(f32, stacked, x), full, atol=1e-4)

  @jax.jit
  def in_two_chunks(params, x):
    state = f32.initial_state(2)
    first, state = f32.apply({"params": params}, x[:, :20], state,
                             method=f32.extend)
    rest, _ = f32.apply({"params": params}, x[:, 20:], state,
                        method=f32.extend)
    return jnp.concatenate([first, rest], 1)

  np.testing.assert_allclose(in_two_chunks(stacked, x), full, atol=1e-4)
  # bf16 products keep about 3 digits, and unit-normal weights amplify them.
  bf16 = _apply(fast, stacked, x)
  assert float(jnp.abs(bf16 - full).mean()) < 0.02 * float(jnp.abs(full).mean())


def test_rope_has_no_position_table(smoke_config):
  learned = make_model(smoke_config.model, V)
  rope = learned.with_settings(position="rope")
  p_learned, p_rope = learned.abstract_params(), rope.abstract_params()
  assert "pos_embed" in p_learned and "pos_embed" not in p_rope
  assert count(p_learned) - count(p_rope) == 32 * 32  # max_len x D
  # The table was a lookup: the FLOPs per token are the same.
  assert (rope.train_flops_per_token(p_rope, 32)
          == learned.train_flops_per_token(p_learned, 32))


def test_rmsnorm_is_the_formula():
  x = jax.random.normal(jax.random.key(0), (3, 5, 8)) * 3 + 1
  module = recipe.norm("rmsnorm", "ln")
  scale = jax.random.normal(jax.random.key(1), (8,))
  y = module.apply({"params": {"scale": scale}}, x)
  expected = x / np.sqrt((np.asarray(x) ** 2).mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, expected * scale, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_qk_norm_bounds_the_attention_logits(smoke_config):
  """Scores q.k / sqrt(K) <= sqrt(K) g_q g_k for inputs 1e4 times larger."""
  K = 16  # d_model 32 / 2 heads

  def max_score(model, params):
    block = params["block_0"]["attn"]
    block["qkv"]["kernel"] = block["qkv"]["kernel"] * 1e4
    _, inter = _apply(model, params, _tokens(), capture_intermediates=True)
    attn = inter["intermediates"]["block_0"]["attn"]
    if "q_norm" in attn:
      q, k = attn["q_norm"]["__call__"][0], attn["k_norm"]["__call__"][0]
    else:  # (B, T, 3D) -> heads of q and k
      q, k = attn["qkv"]["__call__"][0].reshape(2, 16, 3, 2, K)[:, :, :2] \
          .transpose(2, 0, 3, 1, 4)
    return float(jnp.abs(jnp.einsum("bhqk,bhtk->bhqt", q, k)).max()) / K**0.5

  plain, params = _model(smoke_config.copy_and_resolve_references())
  assert max_score(plain, params) > 1e3
  normed, params = _model(smoke_config, qk_norm=True)
  g_q, g_k = 1.5, 0.5
  attn = params["block_0"]["attn"]
  attn["q_norm"]["scale"] = attn["q_norm"]["scale"] * g_q
  attn["k_norm"]["scale"] = attn["k_norm"]["scale"] * g_k
  score = max_score(normed, params)
  assert score <= K**0.5 * g_q * g_k * (1 + 1e-5)
  assert score > 0.5 * K**0.5 * g_q * g_k  # the bound is nearly reached


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gelu", "relu2", "swiglu"])
def test_mlp_is_the_formula(kind, smoke_config):
  D = 12
  x = jax.random.normal(jax.random.key(0), (2, 3, D))
  smoke_config.model.update(d_model=D, mlp=kind, gelu_approximate=True)
  mlp = MLP(make_model(smoke_config.model, V).settings, 0.02)
  params = _randomised(jax.jit(mlp.init)(jax.random.key(0), x)["params"])
  fc, proj = params["fc"], params["proj"]
  h = np.asarray(x) @ fc["kernel"] + fc["bias"]
  if kind == "swiglu":
    F = 8 * D // 3
    assert fc["kernel"].shape == (D, 2 * F) and proj["kernel"].shape == (F, D)
    gate, value = h[..., :F], h[..., F:]
    h = gate / (1 + np.exp(-gate)) * value
  elif kind == "relu2":
    h = np.maximum(h, 0) ** 2
  else:
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
  np.testing.assert_allclose(mlp.apply({"params": params}, x),
                             h @ proj["kernel"] + proj["bias"],
                             rtol=1e-4, atol=1e-4)


def test_swiglu_keeps_the_parameter_count(smoke_config):
  smoke_config.model.d_model = 96
  gelu = make_model(smoke_config.model, V).abstract_params()
  swiglu = make_model(smoke_config.model, V).with_settings(
      mlp="swiglu").abstract_params()
  kernels = lambda p: count([v["kernel"] for v in p["block_0"]["mlp"].values()])
  assert kernels(gelu) == kernels(swiglu) == 8 * 96**2  # 8D/3 = 256 exactly


@pytest.mark.slow
def test_zero_init_blocks_start_as_the_identity(smoke_config):
  model, params = _model(smoke_config, zero_init_proj=True)
  x = _tokens()
  logits = _apply(model, params, x)
  h = params["embed"]["embedding"][x] + params["pos_embed"][:16]  # (B, T, D)
  h = nn.LayerNorm().apply({"params": params["ln_f"]}, h)
  # XLA's head against NumPy's product: sums over the width, reordered.
  assert_reordered_close(logits, h @ params["embed"]["embedding"].T,
                         terms=h.shape[-1])
  assert float(jnp.abs(logits).max()) > 1e-3
  # Untied, the head starts at zero too; the other matrices do not.
  _, params = _model(smoke_config, tie_embeddings=False, position="rope")
  zero = lambda p: not np.asarray(p).any()
  assert zero(params["head"]["kernel"])
  for layer in ("block_0", "block_1"):
    assert zero(params[layer]["attn"]["proj"]["kernel"])
    assert zero(params[layer]["mlp"]["proj"]["kernel"])
    assert not zero(params[layer]["attn"]["qkv"]["kernel"])


def test_softcap_bounds_the_logits(smoke_config):
  capped, params = _model(smoke_config, logit_softcap=3.0)
  params = jax.tree.map(lambda p: p * 50, params)  # logits in the hundreds
  x = _tokens()
  logits = _apply(capped, params, x)
  raw = _apply(capped.with_settings(logit_softcap=0.0), params, x)
  assert float(jnp.abs(raw).max()) > 30
  assert float(jnp.abs(logits).max()) <= 3.0
  np.testing.assert_allclose(logits, 3.0 * np.tanh(raw / 3.0), atol=1e-5)


@pytest.mark.slow
def test_z_loss_is_the_formula_and_zero_is_todays_loss(smoke_config):
  # Dense: the loss compiled whole and the logits computed apart round
  # alike (blocked attention's loops are fused differently in the two).
  smoke_config.model.attention = "dense"
  model, params = _model(smoke_config)
  params = _randomised(params)
  x, y = _tokens(seed=1), _tokens(seed=2)
  key = jax.random.key(0)
  logits = _apply(model, params, x)
  plain, _ = jax.jit(steps.loss_fn, static_argnames="model")(
      params, model, x, y, key)
  assert float(plain) == float(losses.cross_entropy(logits, y))
  smoke_config.train.z_loss = 1e-2
  state = steps.create_train_state(model, smoke_config.train, key)
  assert state.z_loss == 1e-2  # what train_step passes on
  # In two micro-batches: the mean of their z terms is the batch's.
  grads = jax.jit(steps.accumulated_grads, static_argnames=(
      "model", "grad_accum_steps", "z_loss"))
  (on, _), _ = grads(params, model, x, y, key, grad_accum_steps=2,
                     z_loss=state.z_loss)
  lse = np.log(np.exp(np.asarray(logits, np.float64)).sum(-1))
  assert float(on) == pytest.approx(float(plain) + 1e-2 * (lse**2).mean(),
                                    rel=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("position", "alibi", "config.model.position must be one of"),
    ("norm", "batchnorm", "config.model.norm must be one of"),
    ("mlp", "geglu", "config.model.mlp must be one of"),
    ("qk_norm", 1, "config.model.qk_norm must be True or False"),
    ("logit_softcap", -1.0, "config.model.logit_softcap must be a number >= 0"),
    ("d_model", 30, "head size d_model / num_heads = 15 is odd"),
    ("z_loss", -0.1, "config.train.z_loss must be >= 0")])
def test_bad_values_are_refused_in_one_line(smoke_config, field, value,
                                            message):
  smoke_config.model.update(ALL)
  smoke_config.train.z_loss = 1e-4
  check_config(smoke_config.model, smoke_config.train)  # all valid at once
  if field == "z_loss":
    smoke_config.train.z_loss = value
  else:  # (an untyped copy: the locked config refuses 1 for a bool itself)
    smoke_config.model = ml_collections.ConfigDict(
        dict(smoke_config.model.to_dict(), **{field: value}))
  with pytest.raises(UserError, match=message) as e:
    config_lib.validate(smoke_config)
  assert "\n" not in str(e.value)
