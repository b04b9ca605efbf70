"""The PyTorch twin computes what the JAX model computes, on the same weights.

Forward (logits and loss) and one optimiser update (global-norm clipping,
AdamW with decay on matrices only, the warmup-cosine learning rate) agree to
1e-4 in float32, which is what makes the throughput benchmark a comparison
of frameworks rather than of models.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments import torch_models  # noqa: E402
from lm_jax.training import losses, optimizers, steps  # noqa: E402
from lm_jax.models import make_model  # noqa: E402

from conftest import assert_scaled_close  # noqa: E402

V = 13


def _pair(config, **model_overrides):
  """(flax model, its params, torch twin holding the same params)."""
  config.model.update(model_overrides)
  model = make_model(config.model, V)
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  fields = {k: v for k, v in config.model.items() if k != "kind"}
  twin = torch_models.TorchTransformerLM(V, **fields)
  twin.load_state_dict(torch_models.transformer_params_from_flax(state.params))
  return model, state, twin


def _batch(config, seed=1):
  B, T = config.train.batch_size, config.train.seq_len
  tokens = jax.random.randint(jax.random.key(seed), (B, T + 1), 0, V)
  return tokens[:, :-1], tokens[:, 1:]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    dict(), dict(gelu_approximate=False), dict(tie_embeddings=False)])
def test_same_logits_and_loss(smoke_config, overrides):
  model, state, twin = _pair(smoke_config, **overrides)
  x, y = _batch(smoke_config)
  logits = model.apply({"params": state.params}, x)
  with torch.no_grad():
    t_logits = twin(torch.tensor(np.asarray(x)).long())
    t_loss = torch.nn.functional.cross_entropy(
        t_logits.reshape(-1, V), torch.tensor(np.asarray(y)).long().ravel())
  np.testing.assert_allclose(t_logits.numpy(), logits, atol=1e-4, rtol=1e-4)
  loss = losses.cross_entropy(logits, y)
  assert float(t_loss) == pytest.approx(float(loss), abs=1e-4)
  # Different weights must give different logits, or the check means nothing.
  assert not np.allclose(logits, 0, atol=1e-3)


def test_same_fresh_init_statistics(smoke_config):
  """Same init scheme: matching parameter shapes and standard deviations."""
  model, state, _ = _pair(smoke_config, num_layers=2, d_model=64)
  fields = {k: v for k, v in smoke_config.model.items() if k != "kind"}
  torch.manual_seed(0)
  fresh = torch_models.TorchTransformerLM(V, **fields).state_dict()
  converted = torch_models.transformer_params_from_flax(state.params)
  assert {k: v.shape for k, v in fresh.items()} == \
      {k: v.shape for k, v in converted.items()}
  for name, p in converted.items():
    assert float(fresh[name].std()) == pytest.approx(
        float(p.std()), rel=0.25, abs=1e-6), name


@pytest.mark.slow
def test_same_adamw_updates_with_clipping(smoke_config):
  """Two optimiser steps (warmup lr 0, then half the peak) give the same params."""
  t = smoke_config.train
  t.update(warmup_steps=2, grad_clip=0.05, weight_decay=0.1,
           learning_rate=3e-3)
  model, state, twin = _pair(smoke_config)
  initial = torch_models.transformer_params_from_flax(state.params)
  lr = optimizers.lr_schedule(t)
  opt = torch.optim.AdamW(
      torch_models.decay_param_groups(twin, t.weight_decay), lr=0.0,
      betas=(t.b1, t.b2), eps=1e-8)  # optax's adamw default eps
  for s in range(2):
    x, y = _batch(smoke_config, seed=10 + s)
    state, metrics = steps.train_step(state, x, y, jax.random.key(0))
    loss = torch.nn.functional.cross_entropy(
        twin(torch.tensor(np.asarray(x)).long()).reshape(-1, V),
        torch.tensor(np.asarray(y)).long().ravel())
    opt.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), t.grad_clip)
    for group in opt.param_groups:
      group["lr"] = float(lr(s))
    opt.step()
    assert loss.item() == pytest.approx(float(metrics["loss"]), abs=1e-4)
    assert float(norm) == pytest.approx(float(metrics["grad_norm"]), rel=1e-4)
    assert float(norm) > 2 * t.grad_clip  # clipping is active
  assert float(lr(1)) > 0
  expected = torch_models.transformer_params_from_flax(state.params)
  moved = 0
  # PyTorch's sums against XLA's, several Adam steps on: see
  # assert_scaled_close.
  got = {name: p.numpy() for name, p in twin.state_dict().items()}
  assert_scaled_close(got, expected, rel=1e-5)
  for name in got:
    moved += not np.allclose(expected[name], initial[name], atol=1e-5)
  assert moved == len(expected)  # every parameter was updated


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    dict(position="rope"), dict(norm="rmsnorm"), dict(qk_norm=True),
    dict(mlp="relu2"), dict(mlp="swiglu"),
    dict(position="rope", norm="rmsnorm", qk_norm=True, mlp="swiglu",
         zero_init_proj=True, logit_softcap=2.0, tie_embeddings=False)])
def test_recipe_options_same_logits_and_gradients(smoke_config, overrides):
  """Each option of lm_jax/models/recipe.py that changes the function, and
  all together (zero_init_proj changes only the init, checked on the
  twin's own; the soft-cap only the last line): same logits and gradients
  on the same weights, every weight moved off its init by noise so that
  zero-initialised matrices and unit norm scales carry values. One layer:
  half the compiling."""
  model, state, twin = _pair(smoke_config, num_layers=1, **overrides)
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  params = jax.tree.unflatten(tree, [
      p + 0.1 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
  twin.load_state_dict(torch_models.transformer_params_from_flax(params))
  x, y = _batch(smoke_config)

  def loss(params):
    logits = model.apply({"params": params}, x)
    return losses.cross_entropy(logits, y), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  grads = torch_models.transformer_params_from_flax(grads)
  t_logits = twin(torch.tensor(np.asarray(x)).long())
  torch.nn.functional.cross_entropy(
      t_logits.reshape(-1, V), torch.tensor(np.asarray(y)).long().ravel()
  ).backward()
  np.testing.assert_allclose(t_logits.detach().numpy(), logits, atol=1e-4,
                             rtol=1e-4)
  for name, p in twin.named_parameters():
    np.testing.assert_allclose(p.grad.numpy(), grads[name], atol=1e-5,
                               rtol=1e-3, err_msg=name)
  if overrides.get("logit_softcap"):
    assert float(t_logits.detach().abs().max()) <= overrides["logit_softcap"]
  if overrides.get("zero_init_proj"):
    fields = {k: v for k, v in smoke_config.model.items() if k != "kind"}
    fresh = torch_models.TorchTransformerLM(V, **fields).state_dict()
    zero = [n for n in fresh if n.endswith("proj.weight") or n == "head.weight"]
    assert len(zero) == 2 + 1 and all(
        not fresh[n].any() for n in zero)
