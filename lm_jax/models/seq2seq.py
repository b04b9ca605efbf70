"""The interface of an encoder-decoder model: a reply given a prompt.

A batch of pairs (`lm_jax.data.pairs`): `src` (B, S) int32, the prompt's ids
right-padded with PAD_ID (S = `max_source_len`); `tgt` (B, T + 1) int32:
BOS, the reply's ids, EOS, then PAD (T = `max_target_len` + 1: a reply has
at most `max_target_len` tokens; the decoder reads BOS and them). Teacher
forcing feeds the decoder `tgt[:, :-1]` and scores `tgt[:, 1:]`, weighting
each target by `target != PAD_ID`. Special ids: `lm_jax.special_tokens`.

Decoding. `encode(src)` runs the encoder once: its `memory` is a pytree
(encoder outputs, the source padding mask, and whatever the decoder reads
from them at every step, e.g. a Transformer's cross-attention keys and
values). `initial_state(memory)` is the decoder's state before the first
token; BOS is then fed through `extend`, like any other token. Every
non-scalar leaf of `memory` and of a state has the batch as its leading
axis, so a beam search tiles and reorders rows with
`jnp.take(leaf, rows, axis=0)`; scalar leaves (a cache length) are shared
by all rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.models.base import Internals, Model, positive
from lm_jax.special_tokens import BOS_ID, EOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class Seq2SeqSettings:
  """What every encoder-decoder's settings hold (each family's add its
  own): part of `config.model`, declared once, no defaults."""
  max_source_len: int  # prompt tokens at most
  max_target_len: int  # reply tokens at most (BOS and EOS aside)


class Seq2SeqModel(Model):
  """An encoder-decoder over one vocabulary shared by source and target.

  Subclasses are Linen modules (their layers made in `setup`, so that
  `encode`, `initial_state`, `extend` and `cross_attention` can each be
  applied alone with `method=`) holding `config.model` (less `kind`) as
  their `settings`, a `Seq2SeqSettings`.
  """
  task: ClassVar[str] = "pairs"

  settings: Seq2SeqSettings

  @property
  def max_source_len(self) -> int:
    """The longest prompt, in tokens."""
    return self.settings.max_source_len

  @property
  def max_target_len(self) -> int:
    """The longest reply, in tokens (BOS and EOS aside)."""
    return self.settings.max_target_len

  def __call__(self, src: jax.Array, tgt_in: jax.Array, train: bool = False
               ) -> jax.Array:
    """Teacher-forced logits (B, T, V) of the decoder inputs tgt_in (B, T)
    (BOS, then the reply) given the source src (B, S)."""
    memory = self.encode(src, train)
    return self.extend(tgt_in, self.initial_state(memory), train)[0]

  def encode(self, src: jax.Array, train: bool = False) -> Any:
    """The encoder's memory of src (B, S): a pytree, batch-leading."""
    raise NotImplementedError

  def initial_state(self, memory: Any) -> Any:
    """The decoder's state before its first token (BOS), given `memory`."""
    raise NotImplementedError

  def extend(self, tokens: jax.Array, state: Any, train: bool = False
             ) -> tuple[jax.Array, Any]:
    """Logits (B, T, V) of tokens (B, T) following `state`; the new state.

    Feeding BOS, y_1 .. y_k one at a time gives `__call__`'s logits.
    """
    raise NotImplementedError

  def cross_attention(self, src: jax.Array, tgt_in: jax.Array) -> jax.Array:
    """The decoder's attention over source positions, (B, L, H, T, S): per
    layer and head (L = H = 1 for an LSTM with attention); for inspect."""
    raise NotImplementedError

  @classmethod
  def check_config(cls, model, train) -> None:
    super().check_config(model, train)
    positive(model, "max_source_len", "max_target_len")

  def window(self, inputs: tuple[jax.Array, jax.Array], carry: Any = None,
             train: bool = False) -> tuple[jax.Array, None]:
    """The train step's call: inputs (src, tgt_in) from `pairs.get_batch`;
    nothing is carried from batch to batch."""
    return self(*inputs, train=train), None

  def dummy_inputs(self, seq_len: int = 1) -> tuple[jax.Array, jax.Array]:
    """A source of `max_source_len` and decoder inputs of `seq_len` (at
    most the decoder's `max_target_len` + 1 positions)."""
    return (jnp.zeros((1, self.max_source_len), jnp.int32),
            jnp.zeros((1, min(seq_len, self.max_target_len + 1)), jnp.int32))

  @property
  def context_length(self) -> int:
    """The longest prompt (what `lm-jax-inspect` checks a prompt against)."""
    return self.max_source_len

  def internals(self, params, tokens: np.ndarray) -> Internals:
    """The cross-attention of the greedy reply to the prompt `tokens` (S,):
    per layer and head, row t is how the decoder, writing reply token t
    (EOS last), spreads its attention over the prompt's tokens."""
    apply = lambda method: jax.jit(lambda *args: self.apply(
        {"params": params}, *args, method=method))
    S = len(tokens)
    src = jnp.asarray(np.pad(tokens, (0, self.max_source_len - S),
                             constant_values=PAD_ID))[None]  # (1, S_max)
    state = self.initial_state(apply(self.encode)(src))
    extend, reply = apply(self.extend), [BOS_ID]
    # max_target_len + 1 tokens at most, as the sampler writes (the last
    # one EOS when the model learnt it).
    while reply[-1] != EOS_ID and len(reply) <= self.max_target_len + 1:
      logits, state = extend(jnp.asarray([reply[-1:]]), state)
      # As the sampler: never PAD or BOS, so the reply is the one greedy
      # sampling prints and ends at its EOS.
      logits = logits[0, -1].at[jnp.array([PAD_ID, BOS_ID])].set(-jnp.inf)
      reply.append(int(jnp.argmax(logits)))
    weights = apply(self.cross_attention)(src, jnp.asarray([reply[:-1]]))
    values = np.asarray(weights[0, ..., :S])  # (L, H, T, S)
    return Internals(values, tuple(f"head {h}" for h in range(values.shape[1])),
                     "tokens", (False,) * values.shape[1], tuple(reply[1:]))
