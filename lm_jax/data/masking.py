"""Masking schemes of the masked task: which tokens a batch hides, and how
much each hidden one counts in the loss. Pure functions of (tokens, key),
run on device inside the jitted train steps.

"bert" (Devlin et al. 2019): `rate` of each row's positions are chosen
(round(rate x n), at least 1, as BERT's data script does); of those,
`mask_share` become `<mask>`, `random_share` a random text token and the
rest stay as they are. The loss counts the chosen positions, weight 1: the
model must say what every chosen token is, including the ones left alone,
so it cannot learn "a token I can see is right".

"diffusion" (masked diffusion LMs: MDLM, Sahoo et al. 2024; the any-order
bound of Uria et al. 2014 and ARDM, Hoogeboom et al. 2022): each row draws
a rate t ~ U(0, 1] and hides k = ceil(t x n) positions, k uniform in 1..n,
every one as `<mask>`. Each hidden position weighs n / k (1 / rate, the
rate the row realised). Then the weighted mean over the batch's n tokens,
sum(w x nats) / n, is in expectation over k and the hidden set an upper
bound on the text's nats per token: -log p(x) <= n E_k[(1/k) sum over the
k hidden of -log p(x_i | the visible)]. It compares directly with a causal
model's val loss.

`stratified` (config.train.stratified_rates; diffusion only): the batch's
B rates are low-discrepancy, as MDLM draws them: one u ~ U[0, 1) per
batch and t_b = 1 - ((u + b / B) mod 1), one rate in each 1/B of (0, 1].
Each t_b is still U(0, 1], so the bound's expectation is unchanged; the
batch covers the rates evenly, which cuts the variance of its estimate
(and of the gradient) from B independent draws'.

Rows have `valid` positions (padding is never chosen, never counted);
windows of running text are valid everywhere.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lm_jax.special_tokens import MASK_ID, MASKED_SPECIALS

SCHEMES = ("bert", "diffusion")
FIRST_TEXT_ID = len(MASKED_SPECIALS)  # ids below it are never in text


@dataclasses.dataclass(frozen=True)
class MaskScheme:
  """config.train's masking settings and the vocabulary size: static (a
  different scheme is a different program)."""
  scheme: str  # "bert" or "diffusion"
  rate: float  # bert: the share of positions chosen
  mask_share: float  # bert: the chosen replaced by <mask>
  random_share: float  # bert: the chosen replaced by a random text token
  vocab_size: int
  stratified: bool = False  # diffusion: the batch's rates on a grid

  @classmethod
  def from_config(cls, train, vocab_size: int) -> "MaskScheme":
    """A run saved before stratified_rates existed drew them apart."""
    return cls(train.mask_scheme, train.mask_rate, train.mask_share,
               train.random_share, vocab_size,
               bool(train.get("stratified_rates", False)))


class MaskedData(struct.PyTreeNode):
  """The training text's ids (on the host until the trainer places them)
  and how to mask them (part of the treedef)."""
  tokens: jax.Array | np.ndarray  # (N,)
  scheme: MaskScheme = struct.field(pytree_node=False)


def choose(key: jax.Array, valid: jax.Array, k: jax.Array) -> jax.Array:
  """k[b] positions of row b, drawn uniformly among its valid ones.

  valid (B, T) bool, k (B,) int -> chosen (B, T) bool. Each row's valid
  positions get random priorities; the k lowest are chosen.
  """
  scores = jax.random.uniform(key, valid.shape)
  scores = jnp.where(valid, scores, 2.0)  # padding ranks last
  rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)  # (B, T)
  return rank < k[:, None]


def rates(key: jax.Array, rows: int, stratified: bool) -> jax.Array:
  """(rows,) draws of U[0, 1): independent, or `stratified` (one u for
  the batch, row b at (u + b / rows) mod 1: one in each 1/rows)."""
  if not stratified:
    return jax.random.uniform(key, (rows,))
  u = jax.random.uniform(key, ())
  return (u + jnp.arange(rows) / rows) % 1.0


def mask_tokens(key: jax.Array, tokens: jax.Array, valid: jax.Array,
                scheme: MaskScheme
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(inputs, targets, weights), each (B, T), of token rows (B, T).

  targets are the tokens; weights say how much each position's loss
  counts (0: not chosen; see the module docstring).
  """
  k_rate, k_choose, k_split, k_random = jax.random.split(key, 4)
  n = valid.sum(-1)  # (B,)
  if scheme.scheme == "bert":
    k = jnp.maximum(jnp.round(scheme.rate * n), 1).astype(jnp.int32)
  else:  # diffusion: t ~ U(0, 1], k = ceil(t n): uniform in 1..n
    t = 1.0 - rates(k_rate, n.shape[0], scheme.stratified)
    k = jnp.clip(jnp.ceil(t * n), 1, n).astype(jnp.int32)
  chosen = choose(k_choose, valid, k) & valid  # (B, T)
  if scheme.scheme == "bert":
    r = jax.random.uniform(k_split, tokens.shape)
    random = jax.random.randint(k_random, tokens.shape, FIRST_TEXT_ID,
                                scheme.vocab_size)
    replaced = jnp.where(r < scheme.mask_share, MASK_ID,
                         jnp.where(r < scheme.mask_share + scheme.random_share,
                                   random, tokens))
    inputs = jnp.where(chosen, replaced, tokens)
    weights = chosen.astype(jnp.float32)
  else:
    inputs = jnp.where(chosen, MASK_ID, tokens)
    weights = chosen * (n / k)[:, None].astype(jnp.float32)
  return inputs, tokens, weights


def get_batch(data: MaskedData, key: jax.Array, batch_size: int,
              seq_len: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Random windows of the text, masked: inputs (B, T) and the labels
  (targets (B, T), weights (B, T)) the masked objective scores
  (`lm_jax/tasks/masked.py: MaskedTask.objective`)."""
  k_start, k_mask = jax.random.split(key)
  starts = jax.random.randint(k_start, (batch_size,), 0,
                              data.tokens.shape[0] - seq_len)  # (B,)
  rows = jnp.take(data.tokens, starts[:, None] + jnp.arange(seq_len), axis=0)
  inputs, targets, weights = mask_tokens(
      k_mask, rows, jnp.ones(rows.shape, bool), data.scheme)
  return inputs, (targets, weights)
