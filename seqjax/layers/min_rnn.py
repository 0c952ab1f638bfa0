"""minGRU and minLSTM: the gated RNNs of Feng et al. 2024 with the hidden state taken out of
the gates, so that training is a parallel scan.

"Were RNNs All We Needed?" (arXiv:2410.01201). With ``k = Linear(x_t)`` split per gate
(one fused ``Dense``, bias included) and the hidden width equal to ``d_model``:

minGRU (sec. 3.1, Algorithm 2 / log-space Algorithm 4)::

    z_t  = sigmoid(k^z_t)                       update gate   [batch, time, d]
    h~_t = g(k^h_t)                             candidate     [batch, time, d]
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

minLSTM (sec. 3.2, Algorithm 6 / log-space Algorithm 8)::

    f_t, i_t = sigmoid(k^f_t), sigmoid(k^i_t)
    f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)      (time-independent scale)
    h~_t = g(k^h_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

``g(x) = x + 1/2`` for ``x >= 0`` and ``sigmoid(x)`` below (the paper's continuous
positive activation, sec. B.3) keeps ``h~ > 0``, so every ``h_t > 0`` and the recurrence
``h_t = a_t h_{t-1} + b_t`` can run in log space: the parallel mode computes ``log a_t``
and ``log b_t`` directly with softplus identities (``log sigmoid(k) = -softplus(-k)``,
``log(1 - sigmoid(k)) = -softplus(k)``, ``log f'_t = -softplus(softplus(-k^f) -
softplus(-k^i))``) and runs ``seqjax.ops.log_space_scan`` (the paper's
``parallel_scan_log``, by chunks for float32 precision at long lengths). ``step`` takes
one step of the same recurrence in linear space. ``h_0 = 0``. The output is ``h``
(``[batch, time, d_model]``); a padded token leaves ``h`` unchanged (``a = 1``, ``b = 0``).

Params: ``proj/kernel`` ``[d_model, n * d_model]`` and ``proj/bias`` ``[n * d_model]`` with
the gates in the order of the equations above (minGRU: z, h~; minLSTM: f, i, h~).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.ops.log_scan import NEG_INF, log_space_scan
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array


def log_g(x: Array) -> Array:
  """``log g(x)``: ``log(x + 1/2)`` for ``x >= 0``, ``log sigmoid(x)`` below (both
  branches finite everywhere, so the unused one never poisons a gradient)."""
  return jnp.where(x >= 0, jnp.log(jnp.maximum(x, 0.0) + 0.5), -jax.nn.softplus(-x))


class _MinRNN(nn.Module):
  """The shared mixer of minGRU and minLSTM; subclasses give the gate count and the log
  coefficients ``(log a_t, log b_t)`` of ``h_t = a_t h_{t-1} + b_t``."""

  d_model: int
  min_rnn_chunk: int = 64
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = ()
  num_projections: ClassVar[int] = 0

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.d_model <= 0:
      raise ValueError(f'd_model={self.d_model} must be positive')
    if self.min_rnn_chunk <= 0:
      raise ValueError(f'min_rnn_chunk={self.min_rnn_chunk} must be positive')

  def setup(self):
    self.check()
    self.proj = nn.Dense(self.num_projections * self.d_model, dtype=self.dtype,
                         name='proj')

  def log_coefficients(self, k: Array) -> tuple[Array, Array]:
    raise NotImplementedError

  def _coefficients(self, x: Array) -> tuple[Array, Array]:
    k = self.proj(x.astype(self.dtype)).astype(jnp.promote_types(self.dtype, jnp.float32))
    return self.log_coefficients(k)

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``x`` ``[batch, time, d_model]``, ``mask`` ``[batch, time]`` -> ``h`` of ``x``'s
    shape, by the log-space parallel scan."""
    del deterministic
    log_a, log_b = self._coefficients(x)
    if mask is not None:
      real = mask[..., None]
      log_a = jnp.where(real, log_a, 0.0)
      log_b = jnp.where(real, log_b, NEG_INF)
    log_h = log_space_scan(log_a, log_b, chunk=self.min_rnn_chunk)
    return jnp.exp(log_h).astype(self.dtype)

  def init_state(self, batch_size: int) -> State:
    """``h`` ``[batch, d_model]`` zeros (float32 or wider)."""
    return jnp.zeros((batch_size, self.d_model), jnp.promote_types(self.dtype,
                                                                   jnp.float32))

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token ``x_t`` ``[batch, d_model]``: ``h_t = a_t h_{t-1} + b_t``."""
    log_a, log_b = self._coefficients(x_t)
    h = jnp.exp(log_a) * state + jnp.exp(log_b)
    return h, h.astype(self.dtype)


class MinGRU(_MinRNN):
  """minGRU mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (module doc).

  Attributes:
    d_model: model width = hidden width.
    min_rnn_chunk: steps per chunk of the log-space scan (precision, not the result).
    impl: accepted for the interface; no switch.
    dtype: computation dtype of the projection; the scan runs in float32 or wider.
  """

  num_projections: ClassVar[int] = 2

  def log_coefficients(self, k: Array) -> tuple[Array, Array]:
    k_z, k_h = jnp.split(k, 2, axis=-1)
    # a = 1 - z, b = z * g(k_h)
    return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + log_g(k_h)


class MinLSTM(_MinRNN):
  """minLSTM mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (module doc).

  Attributes: as :class:`MinGRU`.
  """

  num_projections: ClassVar[int] = 3

  def log_coefficients(self, k: Array) -> tuple[Array, Array]:
    k_f, k_i, k_h = jnp.split(k, 3, axis=-1)
    # log f' = log f - log(f + i); with d = log(1 + e^-k_f) - log(1 + e^-k_i) =
    # -log f + log i, that is -softplus(d) (and log i' = -softplus(-d)).
    diff = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
    return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(k_h)
