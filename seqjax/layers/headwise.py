"""Per-head building blocks of the gated recurrent families: a block-diagonal linear map
(RG-LRU gates, the mLSTM's q/k/v projections, the sLSTM's input and recurrent weights) and
a per-head normalisation (xLSTM's multi-head LayerNorm, Beck et al. 2024, sec. 4)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class BlockDiagonalDense(nn.Module):
  """``[..., heads * d_in] -> [..., heads * d_out]``: block ``h`` of the input through its
  own ``[d_in, d_out]`` matrix ``w[h]`` (and bias ``b[h]``).

  Attributes:
    heads: number of blocks.
    features: output width ``heads * d_out`` (default: the input width).
    use_bias: add ``b`` ``[heads, d_out]`` (initialised to zero).
    kernel_init: initialiser of ``w`` ``[heads, d_in, d_out]``; the default has variance
      ``1 / d_in`` (fan-in of one block).
  """

  heads: int
  features: int | None = None
  use_bias: bool = True
  kernel_init: Any = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d_in = x.shape[-1] // self.heads
    d_out = (self.features or x.shape[-1]) // self.heads
    w = self.param('w', self.kernel_init, (self.heads, d_in, d_out))
    xh = x.astype(self.dtype).reshape(*x.shape[:-1], self.heads, d_in)
    y = jnp.einsum('...hi,hij->...hj', xh, w.astype(self.dtype))
    if self.use_bias:
      y = y + self.param('b', nn.initializers.zeros, (self.heads, d_out)).astype(self.dtype)
    return y.reshape(*x.shape[:-1], self.heads * d_out)


class MultiHeadNorm(nn.Module):
  """LayerNorm of each head's ``d`` features alone (a group norm with one group per head),
  then a learned scale ``[heads * d]``; no bias. ``x``: ``[..., heads, d]`` -> same."""

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    heads, d = x.shape[-2:]
    scale = self.param('weight', nn.initializers.ones, (heads * d,))
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale.reshape(heads, d)
