"""What every model shares (lm_jax/models/base.py): counting parameters,
the check of positive settings, and a language model's full pass and
training window made of `initial_state` and `extend`."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lm_jax.models.base import ConfigError, LanguageModel, count, positive


class Seen(LanguageModel):
  """Logits: the one-hot of how many tokens came before, mod the
  vocabulary; its state: that count."""
  kind: ClassVar[str] = "seen"

  def initial_state(self, batch_size):
    return jnp.zeros(batch_size, jnp.int32)

  def extend(self, tokens, state, train=False):
    seen = state[:, None] + jnp.arange(tokens.shape[1])
    return jax.nn.one_hot(seen % self.vocab_size, self.vocab_size), (
        state + tokens.shape[1])


def test_count_and_positive_settings():
  assert count({"a": np.zeros((2, 3)), "b": [np.zeros(4), np.zeros(())]}) == 11
  config = ml_collections.ConfigDict(dict(d=4, zero=0, half=0.5, flag=True))
  positive(config, "d")
  for name in ("zero", "half", "flag"):
    with pytest.raises(ConfigError, match=(
        rf"config.model.{name} must be a positive integer, .*; set "
        rf"--config.model.{name}=")):
      positive(config, "d", name)


def test_a_full_pass_and_a_window_are_extend_from_the_start():
  model = Seen(5)
  tokens = jnp.zeros((2, 7), jnp.int32)
  full = model.apply({}, tokens)
  assert list(full[0].argmax(-1)) == [0, 1, 2, 3, 4, 0, 1]
  window, carry = model.apply({}, tokens, method=model.window)
  np.testing.assert_array_equal(window, full)
  assert carry is None
  # Carried on from a state: the next window continues the count.
  later, carry = model.apply({}, tokens[:, :2], jnp.array([3, 3]),
                             method=model.window)
  assert list(later[0].argmax(-1)) == [3, 4] and list(carry) == [5, 5]
  assert model.context_length is None
