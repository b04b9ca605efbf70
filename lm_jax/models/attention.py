"""Blocked causal attention: the (T, T) scores never exist at once.

Dense attention (`CausalSelfAttention`'s teaching path) materialises the
(B, H, T, T) scores and probabilities, and autodiff keeps them for the
backward pass. Here queries and keys are cut into tiles of `tile` positions
and the softmax is computed online (a running maximum and sum per row, as in
FlashAttention). Tiles above the diagonal are never computed. The backward
pass keeps only the output and each row's log-sum-exp and recomputes the
probabilities tile by tile.

Tiles are visited by diagonal: step d pairs query tile i with key tile
i - d for every i at once, so that each step is one batched product over
(B, H, n - d) tiles (large products are what XLA's CPU runs well) and only
step 0, the diagonal, needs a mask. A sequence that is not a multiple of
the tile is padded with zeros; the padded keys lie in every real query's
future, so the causal mask already hides them.

Shapes: B batch, H heads, T time, K head size, n tiles, t = tile.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _tiles(x: jax.Array, tile: int) -> jax.Array:
  """(B, H, T, K) -> (B, H, n, t, K), zero-padded to n * t positions."""
  B, H, T, K = x.shape
  n = -(-T // tile)
  x = jnp.pad(x, ((0, 0), (0, 0), (0, n * tile - T), (0, 0)))
  return x.reshape(B, H, n, tile, K)


def _untile(x: jax.Array, T: int) -> jax.Array:
  """(B, H, n, t, ...) -> (B, H, T, ...), the padding dropped."""
  B, H, n, t = x.shape[:4]
  return x.reshape(B, H, n * t, *x.shape[4:])[:, :, :T]


def _put(x: jax.Array, start: int, value: jax.Array) -> jax.Array:
  """x with tiles start.. (axis 2) replaced by `value`, in place.

  (`x.at[:, :, start:].set` would be a scatter, which XLA copies.)
  """
  return jax.lax.dynamic_update_slice_in_dim(x, value, start, axis=2)


def _add(x: jax.Array, start: int, value: jax.Array) -> jax.Array:
  """x with `value` added to its tiles start.. (axis 2), in place."""
  end = start + value.shape[2]
  return _put(x, start, x[:, :, start:end] + value)


def _scores(q: jax.Array, k: jax.Array, d: int) -> jax.Array:
  """Scaled scores (B, H, n - d, t, t) of query tiles d.. on key tiles ..n-d."""
  n, t, K = q.shape[2:]
  s = jnp.einsum("bhnqk,bhntk->bhnqt", q[:, :, d:], k[:, :, :n - d],
                 preferred_element_type=F32) / math.sqrt(K)
  if d == 0:  # the diagonal tiles: key t' visible from query t if t' <= t
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
  return s


def _forward(q: jax.Array, k: jax.Array, v: jax.Array, tile: int
             ) -> tuple[jax.Array, jax.Array]:
  """Output (B, H, n, t, K) in float32 and log-sum-exp (B, H, n, t), tiled."""
  q, k, v = (_tiles(x, tile) for x in (q, k, v))
  B, H, n, t, K = q.shape
  m = jnp.full((B, H, n, t), -jnp.inf, F32)  # running row maximum
  l = jnp.zeros((B, H, n, t), F32)  # running sum of exp(s - m)
  acc = jnp.zeros((B, H, n, t, K), F32)  # running sum of exp(s - m) v
  for d in range(n):  # d = 0 first: every row's maximum is finite after it
    s = _scores(q, k, d)  # (B, H, n - d, t, t)
    m_new = jnp.maximum(m[:, :, d:], s.max(-1))
    p = jnp.exp(s - m_new[..., None])
    rescale = jnp.exp(m[:, :, d:] - m_new)
    l = _put(l, d, l[:, :, d:] * rescale + p.sum(-1))
    pv = jnp.einsum("bhnqt,bhntk->bhnqk", p.astype(v.dtype), v[:, :, :n - d],
                    preferred_element_type=F32)
    acc = _put(acc, d, acc[:, :, d:] * rescale[..., None] + pv)
    m = _put(m, d, m_new)
  return acc / l[..., None], m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q: jax.Array, k: jax.Array, v: jax.Array, tile: int
               ) -> jax.Array:
  return _untile(_forward(q, k, v, tile)[0], q.shape[2]).astype(q.dtype)


def _attention_fwd(q, k, v, tile):
  o, lse = _forward(q, k, v, tile)
  return _untile(o, q.shape[2]).astype(q.dtype), (q, k, v, o, lse)


def _attention_bwd(tile, res, dy):
  """FlashAttention's backward: per tile, p from the saved log-sum-exp."""
  q_in, k_in, v_in, o, lse = res
  q, k, v, dy = (_tiles(x, tile) for x in (q_in, k_in, v_in, dy))
  n, K = q.shape[2], q.shape[4]
  dy32 = dy.astype(F32)
  row = (dy32 * o).sum(-1)  # (B, H, n, t): sum_t' p dp, from the output
  dq, dk, dv = (jnp.zeros(x.shape, F32) for x in (q, k, v))
  for d in range(n):
    p = jnp.exp(_scores(q, k, d) - lse[:, :, d:, :, None])  # (B,H,n-d,t,t)
    dv = _add(dv, 0, jnp.einsum(
        "bhnqt,bhnqk->bhntk", p.astype(v.dtype), dy[:, :, d:],
        preferred_element_type=F32))
    dp = jnp.einsum("bhnqk,bhntk->bhnqt", dy[:, :, d:], v[:, :, :n - d],
                    preferred_element_type=F32)
    ds = (p * (dp - row[:, :, d:, :, None]) / math.sqrt(K)).astype(q.dtype)
    dq = _add(dq, d, jnp.einsum(
        "bhnqt,bhntk->bhnqk", ds, k[:, :, :n - d], preferred_element_type=F32))
    dk = _add(dk, 0, jnp.einsum(
        "bhnqt,bhnqk->bhntk", ds, q[:, :, d:], preferred_element_type=F32))
  T = q_in.shape[2]
  return tuple(_untile(g, T).astype(x.dtype)
               for g, x in ((dq, q_in), (dk, k_in), (dv, v_in)))


_attention.defvjp(_attention_fwd, _attention_bwd)


def blocked_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                             tile: int) -> jax.Array:
  """softmax(q k^T / sqrt(K), causal) v for q, k, v of shape (B, H, T, K).

  Products run in the inputs' dtype, the softmax in float32; the result
  has the inputs' dtype. Equals the dense computation to float32 rounding.
  A sequence shorter than `tile` is one tile of its own length.
  """
  return _attention(q, k, v, min(tile, q.shape[2]))


def attention_with_past(q: jax.Array, k: jax.Array, v: jax.Array,
                        past_k: jax.Array, past_v: jax.Array,
                        length: jax.Array, *, tile: int) -> jax.Array:
  """Blocked attention of a chunk that continues cached keys and values.

  The chunk attends causally to itself (blocked) and to the first `length`
  cached positions (past_k (B, H, K, S), past_v (B, H, S, K), dense: a
  decoding chunk is short); the two softmaxes are merged by their
  log-sum-exps. For decoding and prefill only (no custom gradient).
  """
  T, K = q.shape[2], q.shape[3]
  o, lse = _forward(q, k, v, min(tile, T))
  o, lse = _untile(o, T), _untile(lse, T)  # (B, H, T, K), (B, H, T)
  s = jnp.einsum("bhqk,bhks->bhqs", q, past_k,
                 preferred_element_type=F32) / math.sqrt(K)
  s = jnp.where(jnp.arange(past_k.shape[3]) < length, s, -jnp.inf)
  past_max = jnp.maximum(s.max(-1), lse)  # finite: lse is
  p = jnp.exp(s - past_max[..., None])  # (B, H, T, S)
  past_sum = p.sum(-1)
  past_o = jnp.einsum("bhqs,bhsk->bhqk", p.astype(past_v.dtype), past_v,
                      preferred_element_type=F32)
  own = jnp.exp(lse - past_max)  # weight of the chunk's own softmax
  y = (past_o + own[..., None] * o) / (past_sum + own)[..., None]
  return y.astype(q.dtype)
