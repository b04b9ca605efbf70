"""The stacked recurrent language model (lm_jax/models/recurrent.py):
embedding, layers and head, each layer's state carried across calls of
`extend`, through a fake layer that sums its inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.models.recurrent import RecurrentSettings, StackedRNN


class RunningSum(nn.Module):
  """Each step's output: its state plus the inputs so far (H = D)."""

  def __call__(self, x, state, table):
    if table is not None:  # the first layer looks up its own inputs
      x = table[x]
    out = state + jnp.cumsum(x, axis=0)  # (T, B, H)
    return out, out[-1]


class Summing(StackedRNN):
  kind = "summing"

  def layer(self, i):
    return RunningSum()

  def layer_state(self, batch_size):
    return self.zeros(batch_size)


def test_the_state_of_every_layer_carries_across_calls():
  model = Summing(7, RecurrentSettings(num_layers=2, embed_dim=4,
                                       hidden_size=4, dropout=0.0))
  tokens = jax.random.randint(jax.random.key(0), (2, 6), 0, 7)
  params = model.init(jax.random.key(1), tokens)["params"]
  assert model.lookup_params(params) == 28  # the embedding: 7 x 4
  state = model.apply({"params": params}, 2, method=model.initial_state)
  assert len(state) == 2 and all(s.shape == (2, 4) for s in state)
  full = model.apply({"params": params}, tokens)
  assert full.shape == (2, 6, 7) and full.dtype == jnp.float32
  first, state = model.apply({"params": params}, tokens[:, :4], state,
                             method=model.extend)
  rest, _ = model.apply({"params": params}, tokens[:, 4:], state,
                        method=model.extend)
  np.testing.assert_allclose(jnp.concatenate([first, rest], 1), full,
                             rtol=1e-5, atol=1e-5)
  # The second layer's state: the running sum of the first's outputs.
  table = params["embed"]["embedding"]
  np.testing.assert_allclose(
      state[1], jnp.cumsum(table[tokens[:, :4]], 1).sum(1), rtol=1e-5)
