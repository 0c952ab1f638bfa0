"""Memory-efficient exact attention: online softmax over blocks, O(T) memory.

Computes the same ``softmax(Q Kᵀ / √d_k) V`` as ``seqjax.ops.attention`` (Vaswani et al.
2017, eq. 1) without ever holding the ``[t_q, t_k]`` score matrix, following Rabe &
Staats 2021 ("Self-attention does not need O(n²) memory") and the FlashAttention-2
schedule (Dao 2023):

* Forward: for each query block, walk the key blocks keeping a running row maximum
  ``m``, normaliser ``l = Σ exp(s - m)`` and unnormalised output ``acc = Σ exp(s - m) v``;
  a new block with maximum ``m'`` rescales the old sums by ``exp(m - m')`` (Milakov &
  Gimelshein 2018). The output is ``acc / l`` and the only residual kept for the backward
  pass is the per-row log-sum-exp ``L = m + log l`` (``[batch, heads, t_q]``).
* Backward (a custom VJP rather than autodiff through the loops, which would store every
  block's probabilities): for each key block, recompute ``P = exp(S - L)`` block by block,
  ``dV += Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP - rowsum(dO ∘ O))``, ``dK += dSᵀ Q``,
  ``dQ += dS K`` (the softmax Jacobian with ``rowsum(P ∘ dP) = rowsum(dO ∘ O)``).

Causal masks skip fully masked blocks without dynamic shapes: the loops over blocks have
traced bounds (query block ``i`` visits only key blocks that overlap positions ``<= i``),
so about half the work of a square causal problem is never done. A sliding window
(``window = W``: key ``j`` visible to query ``i`` only if ``|i - j| < W``, Griffin's local
attention, De et al. 2024 sec. 2.3) narrows the same bounds to the blocks that overlap
the window, so the work is ``O(T W)``. Masks follow
the exact path: a masked score gets exactly zero weight, and a query with no allowed key
gets a zero output and zero gradients (no ``NaN``).

Temporary memory is ``O(batch · heads · (t·d + block_q · block_k))`` instead of
``O(batch · heads · t_q · t_k)``. The weight matrix is never formed, so this path cannot
return attention weights or apply dropout to them.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def chunked_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None,
                      causal: bool = False, offset: int = 0, block_q: int = 512,
                      block_k: int = 512, window: int = 0) -> Array:
  """Exact masked attention ``softmax(Q Kᵀ / √d_k) V`` computed block by block.

  Args:
    q: ``[batch, heads, t_q, d_k]`` queries.
    k: ``[batch, heads, t_k, d_k]`` keys.
    v: ``[batch, heads, t_k, d_v]`` values.
    key_mask: ``[batch, t_k]`` bool, ``True`` = real key (right or arbitrary padding);
      ``None`` allows every key.
    causal: query ``i`` (at absolute position ``offset + i``) sees key ``j`` iff
      ``j <= offset + i``, as ``seqjax.ops.attention.causal_mask``.
    offset: static absolute position of the first query.
    block_q, block_k: block sizes (clamped to the sequence lengths); memory per step is
      ``batch · heads · block_q · block_k`` floats.
    window: ``W > 0``: query ``i`` also needs ``offset + i - W < j`` (and
      ``j < offset + i + W`` when not causal), as ``seqjax.ops.local_attention``; 0 = no
      window.

  Returns:
    ``[batch, heads, t_q, d_v]`` in ``v``'s dtype. Differentiable (custom VJP) in
    ``q``, ``k``, ``v``; equal to the exact path to float32 round-off. Reverse mode
    only: a ``custom_vjp`` has no forward-mode (``jax.jvp``) rule.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError('chunked_attention expects q, k, v of rank 4 [batch, heads, time, '
                     f'dim]; got shapes {q.shape}, {k.shape}, {v.shape}')
  if block_q <= 0 or block_k <= 0:
    raise ValueError(f'block_q={block_q} and block_k={block_k} must be positive')
  if window < 0:
    raise ValueError(f'window={window} must be >= 0 (0: no window)')
  batch, _, t_q, d_k = q.shape
  t_k = k.shape[2]
  out_dtype = v.dtype
  # Blocks no larger than the sequence; lengths are padded up to a whole number of blocks
  # (padded keys are masked out, padded queries sliced off: their cotangent is zero).
  bq, bk = min(block_q, t_q), min(block_k, t_k)
  pad_q, pad_k = -t_q % bq, -t_k % bk
  valid = jnp.ones((batch, t_k), bool) if key_mask is None else key_mask.astype(bool)
  valid = jnp.broadcast_to(valid, (batch, t_k))
  q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
  if pad_q:
    q = jnp.pad(q, ((0, 0), (0, 0), (0, pad_q), (0, 0)))
  if pad_k:
    k = jnp.pad(k, ((0, 0), (0, 0), (0, pad_k), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, 0), (0, pad_k), (0, 0)))
    valid = jnp.pad(valid, ((0, 0), (0, pad_k)))
  config = _Config(causal=bool(causal), offset=int(offset), bq=bq, bk=bk,
                   scale=1.0 / math.sqrt(d_k), window=int(window))
  out = _attention(config, q, k, v, valid)
  return out[:, :, :t_q].astype(out_dtype)


class _Config(NamedTuple):
  """Static (hashable) settings of one attention call."""

  causal: bool
  offset: int
  bq: int
  bk: int
  scale: float
  window: int


def _block(a: Array, index: Array, size: int) -> Array:
  """Block ``index`` of ``size`` positions along the time axis (axis 2, or 1 for masks)."""
  axis = 2 if a.ndim >= 3 else 1
  return jax.lax.dynamic_slice_in_dim(a, index * size, size, axis=axis)


def _block_mask(cfg: _Config, valid_j: Array, i: Array, j: Array) -> Array:
  """Allowed entries of block ``(i, j)``: ``[batch, 1, bq, bk]`` (or ``[batch,1,1,bk]``)."""
  mask = valid_j[:, None, None, :]
  if cfg.causal or cfg.window:
    q_pos = cfg.offset + i * cfg.bq + jnp.arange(cfg.bq, dtype=jnp.int32)
    k_pos = j * cfg.bk + jnp.arange(cfg.bk, dtype=jnp.int32)
    diff = q_pos[:, None] - k_pos[None, :]
    allowed = jnp.ones_like(diff, bool)
    if cfg.causal:
      allowed = diff >= 0
    if cfg.window:
      allowed = allowed & (diff < cfg.window) & (diff > -cfg.window)
    mask = jnp.logical_and(mask, allowed[None, None])
  return mask


def _key_blocks(cfg: _Config, i: Array, nk: int) -> tuple[Array, Array]:
  """``[lo, hi)``: the key blocks that query block ``i`` can see (all if unmasked)."""
  first_q = cfg.offset + i * cfg.bq
  last_q = first_q + cfg.bq - 1
  hi = last_q + cfg.window - 1 if cfg.window else (nk * cfg.bk - 1)
  if cfg.causal:
    hi = jnp.minimum(hi, last_q)
  lo = (first_q - cfg.window + 1) // cfg.bk if cfg.window else 0
  return (jnp.clip(lo, 0, nk).astype(jnp.int32),
          jnp.clip(hi // cfg.bk + 1, 0, nk).astype(jnp.int32))


def _query_blocks(cfg: _Config, j: Array, nq: int) -> tuple[Array, Array]:
  """``[lo, hi)``: the query blocks that can see key block ``j`` (all if unmasked)."""
  first_k = j * cfg.bk
  last_k = first_k + cfg.bk - 1
  if cfg.causal:
    lo = (first_k - cfg.offset) // cfg.bq
  elif cfg.window:
    lo = (first_k - cfg.window + 1 - cfg.offset) // cfg.bq
  else:
    lo = 0
  hi = ((last_k + cfg.window - 1 - cfg.offset) // cfg.bq + 1) if cfg.window else nq
  return (jnp.clip(lo, 0, nq).astype(jnp.int32), jnp.clip(hi, 0, nq).astype(jnp.int32))


def _scores(cfg: _Config, q_i: Array, k_j: Array) -> Array:
  return jnp.einsum('bhqd,bhkd->bhqk', q_i, k_j) * cfg.scale


def _forward(cfg: _Config, q: Array, k: Array, v: Array, valid: Array
             ) -> tuple[Array, Array]:
  """``(output [b, h, t_q, d_v], log-sum-exp [b, h, t_q])`` by online softmax."""
  b, h, t_q, _ = q.shape
  nq, nk = t_q // cfg.bq, k.shape[2] // cfg.bk
  d_v = v.shape[-1]

  def query_block(_, i):
    q_i = _block(q, i, cfg.bq)

    def key_step(j, carry):
      m, l, acc = carry
      s = _scores(cfg, q_i, _block(k, j, cfg.bk))
      s = jnp.where(_block_mask(cfg, _block(valid, j, cfg.bk), i, j), s, -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      # Rows with nothing allowed so far keep m = -inf; shifting by 0 there keeps
      # exp(-inf - shift) = 0 instead of exp(-inf + inf) = NaN.
      shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - shift[..., None])
      rescale = jnp.exp(m - shift)
      l = l * rescale + jnp.sum(p, axis=-1)
      acc = acc * rescale[..., None] + jnp.einsum('bhqk,bhkd->bhqd', p,
                                                  _block(v, j, cfg.bk))
      return m_new, l, acc

    init = (jnp.full((b, h, cfg.bq), -jnp.inf, jnp.float32),
            jnp.zeros((b, h, cfg.bq), jnp.float32),
            jnp.zeros((b, h, cfg.bq, d_v), jnp.float32))
    m, l, acc = jax.lax.fori_loop(*_key_blocks(cfg, i, nk), key_step, init)
    has_keys = l > 0
    out = acc / jnp.where(has_keys, l, 1.0)[..., None]
    # L is only read where a key is allowed, so 0 on empty rows is a safe placeholder.
    lse = jnp.where(has_keys, m + jnp.log(jnp.where(has_keys, l, 1.0)), 0.0)
    return None, (out, lse)

  _, (out, lse) = jax.lax.scan(query_block, None, jnp.arange(nq, dtype=jnp.int32))
  # [nq, b, h, bq, ...] -> [b, h, nq * bq, ...]
  out = jnp.moveaxis(out, 0, 2).reshape(b, h, t_q, d_v)
  lse = jnp.moveaxis(lse, 0, 2).reshape(b, h, t_q)
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(cfg: _Config, q: Array, k: Array, v: Array, valid: Array) -> Array:
  return _forward(cfg, q, k, v, valid)[0]


def _attention_fwd(cfg, q, k, v, valid):
  out, lse = _forward(cfg, q, k, v, valid)
  return out, (q, k, v, valid, out, lse)


def _attention_bwd(cfg, residuals, d_out):
  """FlashAttention-2 backward: outer loop over key blocks, inner over query blocks."""
  q, k, v, valid, out, lse = residuals
  t_q = q.shape[2]
  nq, nk = t_q // cfg.bq, k.shape[2] // cfg.bk
  # rowsum(dO ∘ O) = rowsum(P ∘ dP): the softmax-Jacobian correction per query.
  delta = jnp.sum(d_out * out, axis=-1)

  def key_block(dq, j):
    k_j, v_j, valid_j = _block(k, j, cfg.bk), _block(v, j, cfg.bk), _block(valid, j, cfg.bk)

    def query_step(i, carry):
      dq, dk_j, dv_j = carry
      q_i, do_i = _block(q, i, cfg.bq), _block(d_out, i, cfg.bq)
      s = _scores(cfg, q_i, k_j)
      mask = _block_mask(cfg, valid_j, i, j)
      p = jnp.where(mask, jnp.exp(s - _block(lse, i, cfg.bq)[..., None]), 0.0)
      dv_j = dv_j + jnp.einsum('bhqk,bhqd->bhkd', p, do_i)
      dp = jnp.einsum('bhqd,bhkd->bhqk', do_i, v_j)
      ds = p * (dp - _block(delta, i, cfg.bq)[..., None]) * cfg.scale
      dk_j = dk_j + jnp.einsum('bhqk,bhqd->bhkd', ds, q_i)
      dq_i = _block(dq, i, cfg.bq) + jnp.einsum('bhqk,bhkd->bhqd', ds, k_j)
      dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_i, i * cfg.bq, axis=2)
      return dq, dk_j, dv_j

    init = (dq, jnp.zeros_like(k_j), jnp.zeros_like(v_j))
    dq, dk_j, dv_j = jax.lax.fori_loop(*_query_blocks(cfg, j, nq), query_step, init)
    return dq, (dk_j, dv_j)

  dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros_like(q),
                              jnp.arange(nk, dtype=jnp.int32))
  b, h = k.shape[:2]
  dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
  dv = jnp.moveaxis(dv, 0, 2).reshape(b, h, -1, v.shape[-1])
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)
