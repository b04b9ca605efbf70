"""The interfaces every model implements, and what they default to.

Code outside `lm_jax/models/` (the train step, sampling, the summary, config
checks, `lm-jax-inspect`, the sharding code) talks to a model only through
`Model` and its two kinds of interface: `LanguageModel` here (the next token
of a text) and `lm_jax/models/seq2seq.py: Seq2SeqModel` (a reply to a
prompt); it never asks which model it holds. A new model kind is one file
here plus one entry in `lm_jax.models.MODELS`.

Decoding state. `initial_state(B)` is the state before any token;
`extend(tokens, state)` scores `tokens` after the text the state holds and
returns the state after them: a key/value cache for a Transformer, the
hidden (and cell) state of every layer for a recurrent model. Training
windows use `window(tokens, carry)`, where the carry is that same state
continued from the previous window (truncated BPTT) or None (every window
starts afresh): one code path, the stateless case being an empty carry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


class ConfigError(ValueError):
  """A model setting that cannot work; the caller shows it as a UserError."""


class Internals(NamedTuple):
  """What `lm-jax-inspect` draws: a grid of heat maps over the prompt.

  `values` (L, P, T, X): for each layer, P panels of T prompt positions
  (rows) by X columns: the T key positions of an attention map, or hidden
  units. `signed[p]` marks a panel centred on 0 (cell states) rather than
  in [0, 1] (attention weights, gates).
  """
  values: np.ndarray
  panels: tuple[str, ...]  # one title per panel, e.g. "head 0", "forget gate"
  columns: str  # "tokens" (columns are prompt positions) or "units"
  signed: tuple[bool, ...]
  # The ids the rows stand for where they are not the prompt's: the reply
  # an encoder-decoder wrote (rows) while attending to the prompt (columns).
  rows: tuple[int, ...] | None = None


def count(tree) -> int:
  """The number of scalars in a pytree."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def positive(config: ml_collections.ConfigDict, *names: str,
             prefix: str = "config.model") -> None:
  """Raises ConfigError for the first of `names` that is no positive int."""
  for name in names:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"{prefix}.{name} must be a positive integer, got "
                        f"{value!r}; set --{prefix}.{name}=...")


class Model(nn.Module):
  """What every model shares, language model or encoder-decoder: its
  vocabulary, its name, its config checks and the run summary's hooks.

  `task` names what the model is trained on (`lm_jax.tasks`): "text" (next
  token of running text) or "pairs" (a reply given a prompt).
  """
  vocab_size: int

  kind: ClassVar[str]  # its name in config.model.kind
  task: ClassVar[str] = "text"
  # A frozen dataclass of the settings (config.model less `kind`), every
  # field without a default: the model holds one as its field `settings`
  # and hands it to its blocks.
  Settings: ClassVar[type]

  @classmethod
  def setting_names(cls) -> tuple[str, ...]:
    """The keys of config.model (less `kind`) this model takes."""
    return tuple(f.name for f in dataclasses.fields(cls.Settings))

  @classmethod
  def from_config(cls, fields: dict, vocab_size: int) -> "Model":
    """The model of `fields` (config.model less `kind`, every setting)."""
    # Each family declares its field `settings` with its own type; the base
    # class cannot, so the type checker is told what the call makes.
    make = cast(Callable[..., "Model"], cls)
    return make(vocab_size=vocab_size, settings=cls.Settings(**fields))

  @classmethod
  def check_config(cls, model: ml_collections.ConfigDict,
                   train: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first model setting that cannot work.

    `model` is config.model, `train` config.train; the fields' names and
    the vocabulary are checked by the caller.
    """
    if "num_layers" in model:
      positive(model, "num_layers")
    if "dropout" in model and not 0 <= model.dropout < 1:
      raise ConfigError(f"config.model.dropout must be in [0, 1), got "
                        f"{model.dropout}")

  def dummy_inputs(self, seq_len: int = 1) -> tuple[jax.Array, ...]:
    """Arguments of `__call__` to initialise the parameters with."""
    return (jnp.zeros((1, seq_len), jnp.int32),)

  def abstract_params(self, seq_len: int = 1):
    """The parameters' shapes and dtypes (`jax.eval_shape`: nothing is
    computed, no device is touched)."""
    return jax.eval_shape(lambda: self.init(
        jax.random.key(0), *self.dummy_inputs(seq_len))["params"])

  def lookup_params(self, params) -> int:
    """Parameters read by indexing a table rather than multiplied."""
    return 0

  def train_flops_per_token(self, params, seq_len: int) -> float:
    """Forward + backward FLOPs per token of training: 6 N.

    N counts the parameters used in matrix products (all but lookup
    tables). Each does a multiply and an add per token forward (2 N) and
    twice that backward (4 N): Kaplan et al. 2020, section 2.1.
    """
    return 6 * (count(params) - self.lookup_params(params))

  flops_formula: ClassVar[str] = "6N"

  def activation_bytes(self, batch_size: int, seq_len: int) -> int | None:
    """Activations kept for the backward pass; None: not estimated."""
    return None


class LanguageModel(Model):
  """A next-token model over a vocabulary of `vocab_size` ids.

  Subclasses are Linen modules holding `config.model` (less `kind`) as
  their field `settings`, one of their `Settings`. They implement
  `initial_state`, `extend` and `internals`, and refine the rest where the
  default does not fit.
  """

  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Next-token logits (B, T, V) at every position of tokens (B, T)."""
    return self.extend(tokens, self.initial_state(tokens.shape[0]), train)[0]

  def initial_state(self, batch_size: int) -> Any:
    """The decoding state before the first token, for `batch_size` rows."""
    raise NotImplementedError

  def extend(self, tokens: jax.Array, state: Any, train: bool = False
             ) -> tuple[jax.Array, Any]:
    """Logits (B, T, V) of tokens (B, T) following `state`; the new state."""
    raise NotImplementedError

  def window(self, tokens: jax.Array, carry: Any = None, train: bool = False
             ) -> tuple[jax.Array, Any]:
    """A training window's logits, and the carry for the next window.

    `carry` None: the window starts afresh and nothing is carried (None
    back); else it continues from `carry`, a decoding state.
    """
    if carry is None:
      return self(tokens, train=train), None
    return self.extend(tokens, carry, train=train)

  @property
  def context_length(self) -> int | None:
    """The most tokens the model can attend to; None: no limit (it carries
    a state forward). Sampling slides a window of this many tokens."""
    return None

  def internals(self, params, tokens: np.ndarray) -> Internals:
    """What the model computes inside over one prompt (T,), for inspect."""
    raise NotImplementedError
