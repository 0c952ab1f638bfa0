"""Additive position encodings for token embeddings.

``PositionalEncoding`` adds a position vector to every token embedding (the article's
``PositionalEncoding``; Vaswani et al. 2017, sec. 3.5), then applies dropout:

- ``'sinusoidal'``: the fixed table ``seqjax.ops.positions.sinusoidal_positions``;
- ``'learned'``: a trainable ``[max_len, d_model]`` table (BERT/GPT-2 style), init
  ``normal(0.02)``;
- ``'none'`` and ``'rope'``: nothing is added. Rotary embeddings rotate queries and keys
  inside attention (``MultiHeadAttention(rope=True)``), not the residual stream, so a
  config can pass one ``positions`` setting to both this layer and the attention layer.

Dropout is applied for every kind (it regularises the embeddings, whatever was added), so
switching the position kind does not change the amount of regularisation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.ops.positions import sinusoidal_positions

Array = jax.Array

POSITION_KINDS = ('sinusoidal', 'learned', 'none', 'rope')


class PositionalEncoding(nn.Module):
  """``x + PE[0:T]`` then dropout, for ``x`` ``[batch, time, d_model]``.

  Attributes:
    kind: one of ``POSITION_KINDS`` (see the module docstring).
    max_len: number of positions with an encoding; longer inputs raise ``ValueError``
      (kinds without a table, ``none`` and ``rope``, accept any length).
    d_model: embedding width.
    dropout: dropout rate on the sum.
    dtype: computation dtype (the learned table stays float32).
  """

  kind: str
  max_len: int
  d_model: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    if self.kind not in POSITION_KINDS:
      raise ValueError(f'unknown positional encoding kind={self.kind!r}; choose one of '
                       f'{", ".join(POSITION_KINDS)}')
    if self.kind == 'sinusoidal':
      self.table = sinusoidal_positions(self.max_len, self.d_model)
    elif self.kind == 'learned':
      self.table = self.param('embedding', nn.initializers.normal(stddev=0.02),
                              (self.max_len, self.d_model), jnp.float32)
    else:
      self.table = None
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """``x``: ``[batch, time, d_model]`` -> same shape, positions ``0 .. time-1`` added."""
    time = x.shape[1]
    if self.table is not None and time > self.max_len:
      raise ValueError(f'sequence length {time} exceeds PositionalEncoding '
                       f'max_len={self.max_len}; raise max_len or truncate inputs')
    x = x.astype(self.dtype)
    if self.table is not None:
      x = x + self.table[None, :time].astype(self.dtype)
    return self.drop(x, deterministic=deterministic)

  def at(self, x_t: Array, position: Array | int, *, deterministic: bool = True) -> Array:
    """Streaming form: ``x_t`` ``[batch, d_model]`` plus the encoding of ``position``.

    ``position`` is an int32 scalar and may be traced, so it cannot be range-checked; an
    out-of-range position reads the last row (JAX clamps dynamic indices).
    """
    x_t = x_t.astype(self.dtype)
    if self.table is not None:
      row = jax.lax.dynamic_index_in_dim(self.table, position, axis=0, keepdims=False)
      x_t = x_t + row[None].astype(self.dtype)
    return self.drop(x_t, deterministic=deterministic)
