"""Causal depthwise temporal convolution, the short convolution in front of the recurrences
of Griffin's recurrent block (De et al. 2024, Fig. 2), the mLSTM block (Beck et al. 2024,
Fig. 10) and Mamba-2 (Dao & Gu 2024, sec. 7.1)::

    y_t[c] = b[c] + sum_{j=0}^{width-1} w[j, c] * x_{t - width + 1 + j}[c]

(row ``width - 1`` multiplies the current token; inputs before the sequence are zero).
The parallel mode is a loop over the ``width`` taps, not over time; streaming keeps the
last ``width - 1`` inputs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class CausalConv1D(nn.Module):
  """``[batch, time, channels] -> [batch, time, channels]``.

  Attributes:
    channels: number of channels (each convolved alone).
    width: temporal width (taps).
    kernel_init: initialiser of ``w`` ``[width, channels]``.
    use_bias: whether there is a ``b`` ``[channels]`` (initialised to zero).
    dtype: computation dtype.
  """

  channels: int
  width: int = 4
  kernel_init: Any = nn.initializers.variance_scaling(0.01, 'fan_in', 'normal')
  use_bias: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.w = self.param('w', self.kernel_init, (self.width, self.channels))
    if self.use_bias:
      self.b = self.param('b', nn.initializers.zeros, (self.channels,))

  def _bias(self, y: Array) -> Array:
    return y + self.b.astype(self.dtype) if self.use_bias else y

  def __call__(self, x: Array) -> Array:
    bsz, t, c = x.shape
    w = self.w.astype(self.dtype)
    xp = jnp.pad(x.astype(self.dtype), ((0, 0), (self.width - 1, 0), (0, 0)))
    # Taps and bias on [batch * time, channels] views, so that their gradients sum over
    # the leading axis at batch 1 too (seqjax.layers.block.per_token says why; a profile
    # of Mamba-2's gradient at batch 1, T=1024 had the four taps' sums at ~3 ms each).
    y = sum(w[j] * xp[:, j:j + t].reshape(bsz * t, c) for j in range(self.width))
    return self._bias(y).reshape(bsz, t, c)

  def init_state(self, batch_size: int) -> Array:
    """The last ``width - 1`` inputs, oldest first: ``[batch, width - 1, channels]``."""
    return jnp.zeros((batch_size, self.width - 1, self.channels), self.dtype)

  def step(self, state: Array, x_t: Array) -> tuple[Array, Array]:
    """``x_t`` ``[batch, channels]`` -> (new state, ``y_t`` ``[batch, channels]``)."""
    window = jnp.concatenate([state, x_t[:, None].astype(state.dtype)], axis=1)
    y = jnp.einsum('bjc,jc->bc', window, self.w.astype(self.dtype))
    return window[:, 1:], self._bias(y)
