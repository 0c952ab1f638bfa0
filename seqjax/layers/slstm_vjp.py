"""The sLSTM recurrence over a sequence with a hand-written backward pass.

Same idea as the fused LSTM (``seqjax.layers.lstm_vjp``): autodiff of the ``lax.scan`` in
``SLSTM.__call__`` stores every intermediate of the step and, in its backward loop,
accumulates ``h_{t-1}^T dz_t`` into the recurrent kernel's gradient step by step.
:func:`slstm_scan` instead saves, per step, the local derivatives the backward pass needs
(nine ``[B, heads, d]`` factors and ``h_{t-1}``), runs a reverse ``lax.scan`` whose carry
is ``(dh, dc, dn)`` and whose only matmul is the per-head ``dz_t R^T``, and forms the
kernel's gradient afterwards as one contraction over all ``T * B`` rows.

Gradients (module doc of ``seqjax.layers.slstm``; ``s = sigmoid(f~)``, ``i' = exp(i~ - m_t)``,
``f' = exp(log s + m_{t-1} - m_t)``)::

    dc  = dc_{t+1} f'_{t+1} + dh_t o / n_t        dn = dn_{t+1} f'_{t+1} - dh_t h_t / n_t
    dz_o = dh_t (c_t / n_t) o (1 - o)
    dz_i = (dc tanh(z~) + dn) i'                  dz_z = dc i' (1 - tanh(z~)^2)
    dz_f = (dc c_{t-1} + dn n_{t-1}) f' (1 - s)
    dh_{t-1} = sum_g dz_g R_g^T (per head)

The stabiliser ``m`` is held constant. That is exact, not an approximation: ``m_t`` only
rescales ``c_t`` and ``n_t`` together, and every later ``f'`` undoes the rescaling, so the
outputs do not depend on it and its total derivative is zero (autodiff computes the
paths through ``m`` and they cancel, up to rounding). A padded step keeps the whole state
and outputs the kept ``h``: its gradient passes through and its ``dz`` is zero. Tested
against autodiff of the scan, values and every gradient (``tests/layers/test_slstm.py``);
speed in BENCHMARKS.md, section 7.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

NEG_INF = -1e30  # m_0: step 1 then gives m_1 = i~_1 and a zero forget factor


def slstm_step(h, c, n, m, pre_t, recurrent, bias):
  """One step on ``[B, heads, d]`` states -> the new ``(h, c, n, m)`` and the factors
  of the backward pass (module doc)."""
  raw = pre_t + jnp.einsum('bhi,higj->bghj', h, recurrent) + bias
  i_raw, f_raw, z_raw, o_raw = (raw[:, g] for g in range(4))
  log_f = jax.nn.log_sigmoid(f_raw) + m
  m_new = jnp.maximum(log_f, i_raw)
  i, f = jnp.exp(i_raw - m_new), jnp.exp(log_f - m_new)
  z, o = jnp.tanh(z_raw), jax.nn.sigmoid(o_raw)
  c_new = f * c + i * z
  n_new = f * n + i
  h_new = o * c_new / n_new
  f_slope = f * (1 - jax.nn.sigmoid(f_raw))
  factors = (o / n_new, h_new / n_new, (c_new / n_new) * o * (1 - o), z * i, i,
             c * f_slope, n * f_slope, i * (1 - z * z), f)
  return (h_new, c_new, n_new, m_new), factors


def _forward(pre, real, recurrent, bias, save: bool):
  """``pre [T, B, 4, heads, d]``, ``real [T, B]`` -> ``h [T, B, heads, d]`` (and the
  saved ``h_{t-1}`` and factors when ``save``)."""
  shape = pre.shape[1:2] + pre.shape[3:]
  zeros = jnp.zeros(shape, pre.dtype)
  start = (zeros, zeros, zeros, jnp.full(shape, NEG_INF, pre.dtype))

  def body(state, inputs):
    pre_t, real_t = inputs
    new, factors = slstm_step(*state, pre_t, recurrent, bias)
    keep = real_t[:, None, None]
    new = tuple(jnp.where(keep, a, b) for a, b in zip(new, state))
    return new, (new[0], (state[0], factors) if save else None)

  _, (h, saved) = jax.lax.scan(body, start, (pre, real))
  return h, saved


@jax.custom_vjp
def slstm_scan(pre: Array, real: Array, recurrent: Array, bias: Array) -> Array:
  """The sLSTM over a sequence from its zero state (``m_0 = -inf``).

  Args:
    pre: the input part ``W x`` of the four gates, time-major ``[T, B, 4, heads, d]``
      (gate order i, f, z, o), float32 or wider.
    real: ``[T, B]`` bool, False on padded steps (the state is kept there).
    recurrent: block-diagonal recurrent kernel ``[heads, d, 4, d]``.
    bias: ``[4, heads, d]``.

  Returns:
    ``h [T, B, heads, d]``: each step's hidden state (on a padded step, the kept one).
  """
  return _forward(pre, real, recurrent, bias, save=False)[0]


def _scan_fwd(pre, real, recurrent, bias):
  h, saved = _forward(pre, real, recurrent, bias, save=True)
  return h, (real, recurrent, saved)


def _scan_bwd(residuals, dy):
  real, recurrent, (h_prev, factors) = residuals

  def body(carry, inputs):
    dh, dc, dn = carry
    dy_t, real_t, (a, b, co, zi, i, cf, nf, zz, f) = inputs
    dh = dh + dy_t
    dc_all = dc + dh * a
    dn_all = dn - dh * b
    dz = jnp.stack([dc_all * zi + dn_all * i, dc_all * cf + dn_all * nf, dc_all * zz,
                    dh * co], axis=1)                           # [B, 4, heads, d]
    dh_prev = jnp.einsum('bghj,higj->bhi', dz, recurrent)
    keep = real_t[:, None, None]
    dz = jnp.where(keep[:, None], dz, 0)
    carry = (jnp.where(keep, dh_prev, dh), jnp.where(keep, dc_all * f, dc),
             jnp.where(keep, dn_all * f, dn))
    return carry, dz

  zeros = jnp.zeros_like(dy[0])
  _, dz = jax.lax.scan(body, (zeros, zeros, zeros), (dy, real, factors), reverse=True)
  d_recurrent = jnp.einsum('tbhi,tbghj->higj', h_prev, dz)
  return dz, None, d_recurrent, jnp.sum(dz, axis=(0, 1))


slstm_scan.defvjp(_scan_fwd, _scan_bwd)
