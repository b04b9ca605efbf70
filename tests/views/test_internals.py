"""lm_jax/views/internals.py: what a model computes over a prompt, and its
pictures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.models import make_model
from lm_jax.runs import rundir
from lm_jax.views import internals

from conftest import png_size


@pytest.mark.slow
def test_attention_maps(smoke_run, tmp_path):
  _, tokenizer, model, params, _ = rundir.load_run(smoke_run)
  tokens = tokenizer.encode("LINE 7: the")
  inside = internals.model_internals(model, params, tokens)
  w = inside.values
  L, H, T = model.settings.num_layers, model.settings.num_heads, len(tokens)
  assert inside.panels == ("head 0", "head 1")
  assert w.shape == (L, H, T, T)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.triu(w, k=1) == 0)  # causal: nothing from the future
  # Sowing changes neither the logits nor the parameters (dense attention
  # sows the weights; the default, blocked, has none to sow).
  dense = model.with_settings(attention="dense")
  logits, state = dense.apply({"params": params}, jnp.asarray(tokens)[None],
                              mutable=["intermediates"])
  np.testing.assert_array_equal(
      logits, dense.apply({"params": params}, jnp.asarray(tokens)[None]))
  assert set(state) == {"intermediates"}
  out = internals.plot_internals(inside, list("LINE 7: the"),
                                 tmp_path / "a.png")
  assert png_size(out) == (H * 250, L * 250)


@pytest.mark.slow
def test_lstm_activity_replays_the_model(tmp_path):
  from configs import char_lstm
  config = char_lstm.get_config("smoke")
  model = make_model(config.model, 13)
  tokens = np.array([1, 5, 2, 12, 7, 7, 3])
  params = model.init(jax.random.key(0), jnp.asarray(tokens)[None])["params"]
  inside = internals.model_internals(model, params, tokens)
  activity = inside.values
  L, T, H = config.model.num_layers, len(tokens), config.model.hidden_size
  assert activity.shape == (L, 4, T, H)
  gates = activity[:, :3]
  assert gates.min() >= 0 and gates.max() <= 1
  # The replayed cell state after the prompt is the model's own state.
  _, state = model.apply({"params": params}, jnp.asarray(tokens)[None],
                         model.initial_state(1), method=model.extend)
  for layer, (c, _) in enumerate(state):
    np.testing.assert_allclose(activity[layer, 3, -1], c[0], atol=1e-5)
  out = internals.plot_internals(inside, list("abcdefg"), tmp_path / "lstm.png")
  assert png_size(out) == (4 * 250, L * 250)
