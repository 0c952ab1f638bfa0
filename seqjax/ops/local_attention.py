"""Sliding-window (local) attention computed block by block: ``O(T W)`` memory, not
``O(T^2)``.

Query ``i`` sees key ``j`` iff ``|i - j| < window`` (and ``j <= i`` when causal), the local
attention of Griffin (De et al. 2024, sec. 2.3) and of Longformer/Mistral's sliding window.
Cut the sequence into blocks of ``window`` positions; then every key a query of block ``b``
may see lies in blocks ``b - 1``, ``b`` (and ``b + 1`` when not causal), so each block of
queries attends to ``2 W`` (``3 W``) keys under the exact mask. The softmax is
``seqjax.ops.attention.masked_softmax`` (exact zeros for masked keys, a query with no key
gets a zero output).

Shapes: ``q`` ``[batch, heads, time, d_k]``, ``k`` ``[batch, heads, time, d_k]``, ``v``
``[batch, heads, time, d_v]``; result ``[batch, heads, time, d_v]`` in ``v``'s dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seqjax.ops.attention import masked_softmax

Array = jax.Array


def local_attention(q: Array, k: Array, v: Array, *, window: int,
                    key_mask: Array | None = None, causal: bool = True) -> Array:
  """Exact attention restricted to the sliding window (module doc).

  Args:
    q, k, v: ``[batch, heads, time, d]``.
    window: ``W >= 1``; query ``i`` sees keys ``i - W < j`` (``<= i`` when causal,
      ``< i + W`` otherwise).
    key_mask: ``[batch, time]`` bool, True = real key; ``None`` = all real.
    causal: also hide later keys.
  """
  batch, heads, time, _ = q.shape
  w = max(1, min(window, time))
  n = -(-time // w)
  pad = n * w - time
  if key_mask is None:
    key_mask = jnp.ones((batch, time), bool)
  # One block of zeros (masked) on each side, so block b's neighbours always exist.
  widths = ((0, 0), (0, 0), (w, pad + w), (0, 0))
  kp, vp = jnp.pad(k, widths), jnp.pad(v, widths)
  mp = jnp.pad(key_mask.astype(bool), ((0, 0), (w, pad + w)))
  qb = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0))).reshape(batch, heads, n, w, -1)
  offsets = (0, 1) if causal else (0, 1, 2)       # padded blocks b, b+1, b+2 = b-1, b, b+1

  def neighbours(x, axis):
    blocks = x.reshape(*x.shape[:axis], n + 2, w, *x.shape[axis + 1:])
    return jnp.concatenate([jax.lax.slice_in_dim(blocks, o, o + n, axis=axis)
                            for o in offsets], axis=axis + 1)

  kb, vb = neighbours(kp, 2), neighbours(vp, 2)             # [b, h, n, len(offsets) W, d]
  mb = neighbours(mp, 1)                                     # [b, n, len(offsets) W]
  q_pos = jnp.arange(n)[:, None] * w + jnp.arange(w)[None]                    # [n, W]
  k_pos = (jnp.arange(n)[:, None] - 1) * w + jnp.arange(len(offsets) * w)[None]
  diff = q_pos[:, :, None] - k_pos[:, None, :]                                # [n, W, K]
  allowed = (diff < window) & (diff >= 0 if causal else diff > -window)
  mask = allowed[None, None] & mb[:, None, :, None, :]
  scores = jnp.einsum('bhnqd,bhnkd->bhnqk', qb, kb, preferred_element_type=jnp.float32)
  weights = masked_softmax(scores / math.sqrt(q.shape[-1]), mask)
  out = jnp.einsum('bhnqk,bhnkd->bhnqd', weights.astype(v.dtype), vb,
                   preferred_element_type=jnp.float32)
  return out.reshape(batch, heads, n * w, -1)[:, :, :time].astype(v.dtype)


def window_mask(t_q: int, t_k: int, window: int, causal: bool) -> Array:
  """``[1, 1, t_q, t_k]`` bool: ``|i - j| < window`` (and ``j <= i`` when causal); the
  dense form of :func:`local_attention`'s mask, for references and short sequences."""
  diff = jnp.arange(t_q)[:, None] - jnp.arange(t_k)[None]
  return ((diff < window) & (diff >= 0 if causal else diff > -window))[None, None]
