"""Blocked causal attention: the (T, T) scores never exist at once.

Dense attention (`CausalSelfAttention`'s teaching path) materialises the
(B, H, T, T) scores and probabilities, and autodiff keeps them for the
backward pass. Here queries and keys are cut into tiles of `tile` positions
and the softmax is computed online (a running maximum and sum per row, as in
FlashAttention): a `lax.map` over query tiles i, each a `fori_loop` over key
tiles 0..i, so tiles above the diagonal are never computed and only the
diagonal tile needs a mask. The backward pass (a custom VJP) keeps only the
output and each row's log-sum-exp, and recomputes the probabilities tile by
tile: a scan over key tiles j, each a loop over query tiles j..n-1. A
sequence that is not a multiple of the tile is padded with zeros; the
padded keys lie in every real query's future, so the causal mask hides them.

Dropout on the attention weights is supported (`dropout_rate`, a key), as
dense attention applies it: inverted, the softmax normalised before
dropping, y = (p * mask / keep) v. No mask is stored: tile (i, j)'s mask
is drawn from its own key, `fold_in(fold_in(key, i), j)`, and the backward
pass draws it again from the same key where it recomputes p.
`dropout_mask` builds the whole (B, H, T, T) mask from those keys, for
tests. At rate 0 no mask code is traced.

Loops, not unrolled Python: a first version visited the tiles by diagonal
in unrolled steps (one batched product per diagonal); XLA then copied every
step's tile slices up front and its temp memory equalled dense attention's.
Inside a loop only one pair of tiles is live.

What it saves and costs against dense attention, in memory and time, with
the commands that measured it: experiments/results/attention_cpu.md; the
whole train step, and why blocked is the default:
experiments/results/cpu_gpt6_levers.md.

Shapes: B batch, H heads, T time, K head size, n tiles, t = tile.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _tiles(x: jax.Array, tile: int) -> jax.Array:
  """(B, H, T, K) -> (n, B, H, t, K), zero-padded to n * t positions."""
  B, H, T, K = x.shape
  n = -(-T // tile)
  x = jnp.pad(x, ((0, 0), (0, 0), (0, n * tile - T), (0, 0)))
  return x.reshape(B, H, n, tile, K).transpose(2, 0, 1, 3, 4)


def _untile(x: jax.Array, T: int) -> jax.Array:
  """(n, B, H, t, ...) -> (B, H, T, ...), the padding dropped."""
  n, B, H, t = x.shape[:4]
  x = jnp.moveaxis(x, 0, 2)
  return x.reshape(B, H, n * t, *x.shape[4:])[:, :, :T]


def _scores(q: jax.Array, k: jax.Array, i: jax.Array, j: jax.Array
            ) -> jax.Array:
  """Scaled scores (B, H, t, t) of query tile i on key tile j <= i."""
  t, K = q.shape[2:]
  s = jnp.einsum("bhqk,bhtk->bhqt", q, k, preferred_element_type=F32)
  visible = (j < i) | jnp.tril(jnp.ones((t, t), bool))  # the diagonal tile
  return jnp.where(visible, s / math.sqrt(K), -jnp.inf)


def _tile_key(key: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
  """The dropout key of tile (query tile i, key tile j): a function of the
  three alone, so the backward pass regenerates the forward's mask."""
  return jax.random.fold_in(jax.random.fold_in(key, i), j)


def _tile_mask(key: jax.Array, rate: float, i: jax.Array, j: jax.Array,
               shape: tuple[int, ...]) -> jax.Array:
  """Kept entries (B, H, t, t) of tile (i, j), each with probability
  1 - rate."""
  return jax.random.bernoulli(_tile_key(key, i, j), 1.0 - rate, shape)


def _drop(x: jax.Array, key, rate: float, i: jax.Array, j: jax.Array
          ) -> jax.Array:
  """x * mask / keep on tile (i, j) (inverted dropout); x itself at rate 0,
  with nothing traced."""
  if rate == 0:
    return x
  mask = _tile_mask(key, rate, i, j, x.shape)
  return jnp.where(mask, x / (1.0 - rate), 0.0).astype(x.dtype)


def _forward(q: jax.Array, k: jax.Array, v: jax.Array, tile: int,
             key=None, rate: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Output (n, B, H, t, K) in float32 and log-sum-exp (n, B, H, t), tiled.

  With `rate` > 0 the output is (p * mask / keep) v, tile (i, j)'s mask
  drawn from `key`; the log-sum-exp is the undropped softmax's.
  """
  q, k, v = (_tiles(x, tile) for x in (q, k, v))
  n, B, H, t, K = q.shape

  def row(i):  # query tile i: key tiles 0..i, softmax online
    def add_tile(j, carry):
      m, l, acc = carry  # running max, sum of exp(s - m), sum of exp(s - m) v
      s = _scores(q[i], k[j], i, j)
      m_new = jnp.maximum(m, s.max(-1))
      p = jnp.exp(s - m_new[..., None])
      rescale = jnp.exp(m - m_new)
      pv = jnp.einsum("bhqt,bhtk->bhqk",
                      _drop(p, key, rate, i, j).astype(v.dtype), v[j],
                      preferred_element_type=F32)
      return m_new, l * rescale + p.sum(-1), acc * rescale[..., None] + pv

    m, l, acc = jax.lax.fori_loop(0, i + 1, add_tile, (
        jnp.full((B, H, t), -jnp.inf, F32), jnp.zeros((B, H, t), F32),
        jnp.zeros((B, H, t, K), F32)))
    return acc / l[..., None], m + jnp.log(l)

  return jax.lax.map(row, jnp.arange(n))


# The dropout key is a primal argument (an array, possibly a typed key array,
# traced under jit); it gets no cotangent (None). None when rate is 0.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q: jax.Array, k: jax.Array, v: jax.Array, key, tile: int,
               rate: float) -> jax.Array:
  return _untile(_forward(q, k, v, tile, key, rate)[0],
                 q.shape[2]).astype(q.dtype)


def _attention_fwd(q, k, v, key, tile, rate):
  o, lse = _forward(q, k, v, tile, key, rate)
  return _untile(o, q.shape[2]).astype(q.dtype), (q, k, v, key, o, lse)


def _attention_bwd(tile, rate, res, dy):
  """FlashAttention's backward: per tile, p from the saved log-sum-exp, and
  with dropout the tile's mask drawn again from its key.

  With dropout, dv takes (p * mask / keep)^T dy, dp = (dy v^T) * mask / keep,
  and ds = p (dp - rowsum(dy * o)) / sqrt(K) as without: o is the dropped
  output, so rowsum(dy * o) is still sum_t' p dp.
  """
  q_in, k_in, v_in, key, o, lse = res
  q, k, v, dy = (_tiles(x, tile) for x in (q_in, k_in, v_in, dy))
  n, B, H, t, K = q.shape
  row = (dy.astype(F32) * o).sum(-1)  # (n, B, H, t): sum_t' p dp, from o

  def column(dq, j):  # key tile j: query tiles j..n-1
    def add_tile(i, carry):
      dk, dv, dq = carry
      p = jnp.exp(_scores(q[i], k[j], i, j) - lse[i][..., None])  # (B,H,t,t)
      dv = dv + jnp.einsum("bhqt,bhqk->bhtk",
                           _drop(p, key, rate, i, j).astype(v.dtype), dy[i],
                           preferred_element_type=F32)
      dp = _drop(jnp.einsum("bhqk,bhtk->bhqt", dy[i], v[j],
                            preferred_element_type=F32), key, rate, i, j)
      ds = (p * (dp - row[i][..., None]) / math.sqrt(K)).astype(q.dtype)
      dq = dq.at[i].add(jnp.einsum("bhqt,bhtk->bhqk", ds, k[j],
                                   preferred_element_type=F32))
      dk = dk + jnp.einsum("bhqt,bhqk->bhtk", ds, q[i],
                           preferred_element_type=F32)
      return dk, dv, dq

    zero = jnp.zeros((B, H, t, K), F32)
    dk, dv, dq = jax.lax.fori_loop(j, n, add_tile, (zero, zero, dq))
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(column, jnp.zeros(q.shape, F32), jnp.arange(n))
  T = q_in.shape[2]
  return (*(_untile(g, T).astype(x.dtype)
            for g, x in ((dq, q_in), (dk, k_in), (dv, v_in))), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def _check_dropout(dropout_rate: float, dropout_rng) -> None:
  if not 0 <= dropout_rate < 1:
    raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
  if dropout_rate > 0 and dropout_rng is None:
    raise ValueError("dropout_rate > 0 needs a dropout_rng")


def blocked_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                             tile: int, dropout_rate: float = 0.0,
                             dropout_rng: jax.Array | None = None
                             ) -> jax.Array:
  """softmax(q k^T / sqrt(K), causal) v for q, k, v of shape (B, H, T, K).

  Products run in the inputs' dtype, the softmax in float32; the result
  has the inputs' dtype. Equals the dense computation to float32 rounding.
  A sequence shorter than `tile` is one tile of its own length.

  With `dropout_rate` > 0 (a Python float; `dropout_rng` a key, needed
  then), the weights are dropped as dense attention's are, inverted:
  (softmax * mask / (1 - rate)) v, mask ~ Bernoulli(1 - rate), the softmax
  normalised before dropping. The mask is `dropout_mask(dropout_rng, B, H,
  T, tile=tile, dropout_rate=dropout_rate)`, drawn tile by tile. At rate 0
  the key is ignored and the computation is the one without dropout.
  """
  _check_dropout(dropout_rate, dropout_rng)
  rate = float(dropout_rate)
  key = dropout_rng if rate > 0 else None
  return _attention(q, k, v, key, min(tile, q.shape[2]), rate)


def dropout_mask(dropout_rng: jax.Array, batch: int, heads: int, T: int, *,
                 tile: int, dropout_rate: float) -> jax.Array:
  """The kept entries (B, H, T, T), bool, that `blocked_causal_attention`
  with this key, rate and tile applies to the weights of a (B, H, T, K)
  input: tile (i, j)'s block drawn from its own key, as the blocked code
  draws it. Entries above the diagonal are drawn too (their weights are 0).
  For tests and inspection: it materialises the (T, T) mask.
  """
  _check_dropout(dropout_rate, dropout_rng)
  tile = min(tile, T)
  n = -(-T // tile)
  i, j = (x.ravel() for x in jnp.meshgrid(jnp.arange(n), jnp.arange(n),
                                          indexing="ij"))
  tiles = jax.vmap(lambda i, j: _tile_mask(
      dropout_rng, dropout_rate, i, j, (batch, heads, tile, tile)))(i, j)
  mask = tiles.reshape(n, n, batch, heads, tile, tile)  # (i, j, B, H, t, t)
  mask = mask.transpose(2, 3, 0, 4, 1, 5).reshape(batch, heads, n * tile,
                                                  n * tile)
  return mask[:, :, :T, :T]


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


def attention_over_cache(q: jax.Array, cache_k: jax.Array,
                         cache_v: jax.Array, length: jax.Array) -> jax.Array:
  """One decoding position's attention, q (B, H, 1, K), over a cache that
  already holds its own key and value at position `length` (cache_k
  (B, H, K, S), cache_v (B, H, S, K)): the positions <= length.

  Writing the new key and value first and then reading the cache lets XLA
  update the donated cache in place; reading the old cache and writing
  after it made XLA copy each layer's whole cache twice at every step
  (most of a 32-row decode step of the default char_tf model on a CPU:
  experiments/probe_serve_step.py). The same output as
  `attention_with_past` with T = 1, up to rounding.
  """
  K = q.shape[3]
  s = jnp.einsum("bhqk,bhks->bhqs", q, cache_k,
                 preferred_element_type=F32) / math.sqrt(K)
  s = jnp.where(jnp.arange(cache_k.shape[3]) <= length, s, -jnp.inf)
  p = jax.nn.softmax(s, axis=-1)  # (B, H, 1, S)
  y = jnp.einsum("bhqs,bhsk->bhqk", p.astype(cache_v.dtype), cache_v,
                 preferred_element_type=F32)
  return y.astype(q.dtype)
