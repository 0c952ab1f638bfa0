"""Fused LSTM scan with a hand-written backward pass (cuDNN-style training step).

Plain autodiff of a ``lax.scan`` LSTM makes the backward loop do, per step, the hidden
matmul *and* an outer product ``h_{t-1}^T dz_t`` accumulated into ``dW_hh`` (plus the
input-side ``x_t^T dz_t`` and ``dz_t W_ih^T`` when the projection is inside the loop): many
small, bandwidth-bound updates of a ``[H, 4H]`` accumulator. :func:`lstm_scan` instead

* forward: a ``lax.scan`` computing ``x_t W_ih + h_{t-1} W_hh + b`` per step that saves
  only what the backward pass needs: each step's local derivatives (``[B, 4H]`` gate
  factors and ``[B, H]`` forget gate and ``dh -> dc`` factor, see :func:`_forward`) and
  ``h_{t-1}`` ``[B, H]``. Saving derivatives instead of activations takes the ``tanh``
  recomputation and most multiplies out of the backward loop. The input projection stays
  *inside* the loop: hoisting it as one ``[T*B, E] @ [E, 4H]`` matmul writes and re-reads a
  ``[T, B, 4H]`` buffer and measured 1.7x slower on CPU;
* backward: a reverse ``lax.scan`` whose carry is only ``(dh, dc)`` and whose per-step
  work is a few elementwise products and one ``[B, 4H] @ [4H, H]`` matmul; it emits the
  pre-activation gradients ``dz_t`` ``[B, 4H]``;
* then ``dW_hh = H_prev^T dZ``, ``dW_ih = X^T dZ``, ``db = sum dZ`` and ``dX = dZ W_ih^T``
  as four large matmuls over all ``T*B`` rows (``seqjax.layers.fused_scan``).

The variants tried, the speed-ups and a profile of where the time goes are in BENCHMARKS.md
("Design measurements: fused recurrent scans").

Gradients (Hochreiter & Schmidhuber 1997 cell, PyTorch gate order ``i, f, g, o``), with
``c_t = f c_{t-1} + i g`` and ``h_t = o tanh(c_t)``::

    dc_t   += dh_t * o * (1 - tanh(c_t)^2)
    dz_i = dc_t g i (1 - i)      dz_f = dc_t c_{t-1} f (1 - f)
    dz_g = dc_t i (1 - g^2)      dz_o = dh_t tanh(c_t) o (1 - o)
    dh_{t-1} = dz_t W_hh^T       dc_{t-1} = dc_t f

Masking is the same as :func:`seqjax.layers.recurrent.masked_scan`: on a padded step the
carry passes through unchanged and the output is 0, so in the backward pass the carry
gradient passes through and ``dz_t = 0``. Tested against autodiff of ``masked_scan``
(``tests/layers/test_recurrent_fast.py``) to 1e-5 in outputs and all gradients.

The GRU has the same path in :mod:`seqjax.layers.gru_vjp` (:func:`gru_scan`; its reset
gate multiplies the hidden projection, ``r * (W_hn h + b_hn)``, so it emits two per-step
gradient streams, one for the input and one for the hidden pre-activations). Each cell
names its fused scan in its ``CellDef`` (``LSTM_CELL.fused_scan is lstm_scan``).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from seqjax.layers.fused_scan import fused_scan, sum_over_steps

Array = jax.Array


def _gates(z: Array, hidden: int) -> tuple[Array, Array, Array, Array]:
  """Pre-activations ``[B, 4H]`` -> activations ``i, f, g, o`` ``[B, H]`` each."""
  i = jax.nn.sigmoid(z[:, :hidden])
  f = jax.nn.sigmoid(z[:, hidden:2 * hidden])
  g = jnp.tanh(z[:, 2 * hidden:3 * hidden])
  o = jax.nn.sigmoid(z[:, 3 * hidden:])
  return i, f, g, o


def _forward(reverse: bool, params: Mapping[str, Array], xs: Array, mask: Array | None,
             carry: tuple[Array, Array], save: bool):
  """Forward scan; with ``save`` also returns the per-step residuals of the backward pass.

  The residuals are the *local derivatives* of one step rather than the gate activations,
  so the backward loop is a few multiplies per element and no transcendental functions::

      gate_grad_t = [g i (1 - i), c_{t-1} f (1 - f), i (1 - g^2), tanh(c_t) o (1 - o)]  [B, 4H]
      forget_t    = f                                                                 [B, H]
      cell_grad_t = o (1 - tanh(c_t)^2)                                               [B, H]

  plus the previous hidden state ``h_{t-1}`` ``[B, H]`` for the ``dW_hh`` matmul.
  """
  w_ih, w_hh, b = params['w_ih'], params['w_hh'], params['b']
  hidden = w_hh.shape[0]

  def body(carry, inputs):
    h, c = carry
    x_t, m_t = inputs
    z = jnp.dot(x_t, w_ih) + jnp.dot(h.astype(w_hh.dtype), w_hh) + b
    i, f, g, o = _gates(z, hidden)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    if m_t is None:
      new, y = (h_new, c_new), h_new
    else:
      keep = m_t[:, None]
      new = (jnp.where(keep, h_new, h), jnp.where(keep, c_new, c))
      y = jnp.where(keep, h_new, jnp.zeros_like(h_new))
    res = ()
    if save:
      gate_grad = jnp.concatenate([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g),
                                   tanh_c * o * (1 - o)], axis=-1)
      res = (h, gate_grad, f, o * (1 - tanh_c * tanh_c))
    return new, (y, res)

  final, (ys, res) = jax.lax.scan(body, carry, (xs, mask), reverse=reverse)
  return final, ys, res


def _lstm_scan_bwd(reverse, residuals, cotangents):
  params, xs, mask, (h_prev, gate_grads, forgets, cell_grads) = residuals
  (dh_final, dc_final), dys = cotangents
  w_ih, w_hh = params['w_ih'], params['w_hh']
  w_hh_t = w_hh.T  # transposed once, outside the loop

  def body(dcarry, inputs):
    dh, dc = dcarry
    dy_t, m_t, gate_grad, forget, cell_grad = inputs
    dh_t, dc_t = dh + dy_t, dc
    if m_t is not None:
      keep = m_t[:, None]
      dh_t = jnp.where(keep, dh_t, 0)
      dc_t = jnp.where(keep, dc_t, 0)
    dc_t = dc_t + dh_t * cell_grad
    # dz = [dc, dc, dc, dh] * gate_grad: the i, f, g gates act through c_t, o through h_t.
    dz = (jnp.concatenate([dc_t, dc_t, dc_t, dh_t], axis=-1) * gate_grad).astype(w_hh.dtype)
    dh_p = jnp.dot(dz, w_hh_t).astype(dh.dtype)
    dc_p = dc_t * forget
    if m_t is not None:
      # A padded step left the carry unchanged: its gradient passes straight through.
      dh_p = jnp.where(keep, dh_p, dh)
      dc_p = jnp.where(keep, dc_p, dc)
    return (dh_p, dc_p), dz

  (dh0, dc0), dz = jax.lax.scan(body, (dh_final, dc_final),
                                (dys, mask, gate_grads, forgets, cell_grads),
                                reverse=not reverse)
  d_params = {'w_ih': sum_over_steps(xs, dz), 'w_hh': sum_over_steps(h_prev, dz),
              'b': jnp.sum(dz, axis=(0, 1))}
  d_params = {k: v.astype(params[k].dtype) for k, v in d_params.items()}
  dxs = jnp.dot(dz, w_ih.T).astype(xs.dtype)
  return d_params, dxs, None, (dh0, dc0)


_lstm_scan = fused_scan(_forward, _lstm_scan_bwd)


def lstm_scan(params: Mapping[str, Array], xs: Array, mask: Array | None,
              carry: tuple[Array, Array], *,
              reverse: bool = False) -> tuple[tuple[Array, Array], Array]:
  """One LSTM direction over time with the fused backward pass.

  Same contract as ``masked_scan(LSTM_CELL, ...)``: ``params`` ``{'w_ih' [E, 4H],
  'w_hh' [H, 4H], 'b' [4H]}``, ``xs`` time-major ``[T, B, E]``, ``mask`` ``[T, B]`` bool or
  ``None``, ``carry`` ``(h, c)`` ``[B, H]`` each. Returns ``((h_T, c_T), ys [T, B, H])``
  with ``ys`` 0 at padded steps. Differentiable w.r.t. params, ``xs`` and ``carry``.
  """
  params = {k: params[k] for k in ('w_ih', 'w_hh', 'b')}
  if mask is not None:
    mask = mask.astype(bool)
  return _lstm_scan(reverse, params, xs, mask, tuple(carry))
