"""Position encodings: the sinusoidal table and rotary embeddings (RoPE).

Sinusoidal (Vaswani et al. 2017, sec. 3.5; the article's ``PositionalEncoding``)::

    PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

RoPE (Su et al. 2021, RoFormer, eq. 34) rotates each pair of query/key features by an
angle proportional to the token's position, ``θ_i = base^(-2i / head_dim)``. Because a
rotation by ``mθ`` followed by the transpose of a rotation by ``nθ`` is a rotation by
``(m - n)θ``, the score ``<rope(q, m), rope(k, n)>`` depends on positions only through
``m - n``; rotations also preserve norms.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def sinusoidal_positions(max_len: int, d_model: int, dtype: Any = jnp.float32) -> Array:
  """The sinusoidal table ``[max_len, d_model]`` (formula in the module docstring).

  Computed in float64 NumPy and cast once: it is a constant, and float32 angles
  ``pos * freq`` would lose ~1e-4 rad at positions in the thousands.

  An odd ``d_model`` is allowed: the formula is applied to every column that exists, so
  the last column is a ``sin`` whose cosine partner is dropped (the PyTorch snippet in the
  article would fail on a shape mismatch instead).
  """
  if max_len < 0 or d_model <= 0:
    raise ValueError(f'sinusoidal_positions needs max_len >= 0 and d_model > 0, got '
                     f'max_len={max_len}, d_model={d_model}')
  return jnp.asarray(_sinusoidal_table(max_len, d_model), dtype=dtype)


@functools.lru_cache(maxsize=16)
def _sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
  # Cached: modules rebuild the table on every trace, and it never changes.
  pos = np.arange(max_len, dtype=np.float64)[:, None]
  two_i = np.arange(0, d_model, 2, dtype=np.float64)
  angles = pos / np.power(10000.0, two_i / d_model)  # [max_len, ceil(d_model / 2)]
  table = np.empty((max_len, d_model), np.float64)
  table[:, 0::2] = np.sin(angles)
  table[:, 1::2] = np.cos(angles[:, : d_model // 2])
  table.flags.writeable = False
  return table


def rope_frequencies(head_dim: int, base: float = 10000.0) -> Array:
  """RoPE rotation speeds ``θ_i = base^(-2i / head_dim)``: float32 ``[head_dim // 2]``."""
  if head_dim % 2:
    raise ValueError(f'RoPE rotates feature pairs, so head_dim must be even, got '
                     f'{head_dim}')
  exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
  return jnp.asarray(base ** -exponents, dtype=jnp.float32)


def apply_rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding of queries or keys.

  Layout: ``x`` is ``[batch, time, heads, head_dim]`` (the projection output before heads
  are moved forward, which is also the KV-cache layout). Pairing is "rotate half"
  (GPT-NeoX / LLaMA): feature ``i`` is paired with feature ``i + head_dim / 2`` and the pair
  is rotated by ``position * θ_i``. This is RoFormer's interleaved rotation up to a fixed
  permutation of features, which the following projections absorb.

  Args:
    x: ``[batch, time, heads, head_dim]``; ``head_dim`` even.
    positions: integer positions broadcastable to ``[batch, time]`` (e.g. ``[time]``, or
      ``[1]`` holding a traced decoding index).
    base: the RoPE base (10000 in RoFormer).

  Returns:
    ``x`` rotated, same shape and dtype (angles and rotation computed in float32).
  """
  inv_freq = rope_frequencies(x.shape[-1], base)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [.., time, hd/2]
  cos = jnp.cos(angles)[..., None, :]  # broadcast over heads
  sin = jnp.sin(angles)[..., None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)
