"""Fused GRU scan with a hand-written backward pass (the GRU twin of ``lstm_vjp``).

Same design as :func:`seqjax.layers.lstm_vjp.lstm_scan`, for the same reason: autodiff
of a ``lax.scan`` GRU accumulates the weight gradients inside the backward loop as many
small outer products into ``[H, 3H]`` / ``[E, 3H]`` accumulators. :func:`gru_scan` instead

* forward: a ``lax.scan`` computing ``x_t W_ih + b_ih`` and ``h_{t-1} W_hh + b_hh`` per
  step (the input projection stays inside the loop, measured faster on CPU for the LSTM)
  that saves the step's local derivatives ``[B, 3H]``, the gates ``r``, ``z`` and
  ``h_{t-1}`` ``[B, H]`` each (see :func:`_forward`);
* backward: a reverse ``lax.scan`` whose carry is only ``dh`` and whose per-step work is a
  few elementwise products (no transcendental functions) and one ``[B, 3H] @ [3H, H]``
  matmul; it emits both pre-activation gradients ``dg_x``, ``dg_h`` ``[B, 3H]``;
* then ``dW_ih = X^T dG_x``, ``dW_hh = H_prev^T dG_h``, ``db_ih = sum dG_x``,
  ``db_hh = sum dG_h`` and ``dX = dG_x W_ih^T`` as large matmuls over all ``T*B`` rows.

A training step measured 1.11-1.12x faster than autodiff of ``masked_scan`` on CPU
(BENCHMARKS.md, "Design measurements: fused recurrent scans", with the variants that were
slower).

Cell (Cho et al. 2014, PyTorch ``nn.GRU`` semantics, gate blocks ``r, z, n``), with
``a = x_t W_ih + b_ih`` and ``b = h_{t-1} W_hh + b_hh`` split into ``(a_r, a_z, a_n)``,
``(b_r, b_z, b_n)``::

    r = σ(a_r + b_r)   z = σ(a_z + b_z)   n = tanh(a_n + r b_n)   h_t = (1 - z) n + z h_{t-1}

Gradients, with ``dh_t`` the total gradient reaching ``h_t`` (carry + output)::

    dn_pre = dh_t (1 - z) (1 - n^2)              gradient w.r.t. a_n + r b_n
    dr_pre = dn_pre b_n r (1 - r)                dz_pre = dh_t (h_{t-1} - n) z (1 - z)
    dg_x = [dr_pre, dz_pre, dn_pre]              gradient w.r.t. a   [B, 3H]
    dg_h = [dr_pre, dz_pre, dn_pre r]            gradient w.r.t. b   [B, 3H]
    dh_{t-1} = dh_t z + dg_h W_hh^T

The two streams differ only in the ``n`` block because the reset gate multiplies the hidden
projection (``b_hn`` included), which is why ``b_ih`` and ``b_hh`` get different gradients.

Masking is the same as :func:`seqjax.layers.recurrent.masked_scan`: on a padded step the
carry passes through unchanged and the output is 0, so in the backward pass the carry
gradient passes through and ``dg_x = dg_h = 0``. Tested against autodiff of ``masked_scan``
(``tests/layers/test_recurrent_fast.py``) to 1e-5 in outputs and all gradients.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from seqjax.layers.fused_scan import fused_scan, sum_over_steps

Array = jax.Array


def _forward(reverse: bool, params: Mapping[str, Array], xs: Array, mask: Array | None,
             carry: Array, save: bool):
  """Forward scan; with ``save`` also returns the per-step residuals of the backward pass.

  The residuals are local derivatives, so the backward step is multiplies only::

      gate_grad_t = [(1-z)(1-n^2) b_n r(1-r), (h_{t-1}-n) z(1-z), (1-z)(1-n^2)]  [B, 3H]
      r_t, z_t                                                                 [B, H]

  (``dg_x = [dh_t, dh_t, dh_t] * gate_grad_t``), plus ``h_{t-1}`` ``[B, H]`` for
  ``dW_hh``.
  """
  w_ih, w_hh, b_ih, b_hh = params['w_ih'], params['w_hh'], params['b_ih'], params['b_hh']
  hidden = w_hh.shape[0]

  def body(h, inputs):
    x_t, m_t = inputs
    a = jnp.dot(x_t, w_ih) + b_ih
    b = jnp.dot(h.astype(w_hh.dtype), w_hh) + b_hh
    r = jax.nn.sigmoid(a[:, :hidden] + b[:, :hidden])
    z = jax.nn.sigmoid(a[:, hidden:2 * hidden] + b[:, hidden:2 * hidden])
    b_n = b[:, 2 * hidden:]
    n = jnp.tanh(a[:, 2 * hidden:] + r * b_n)
    h_new = (1.0 - z) * n + z * h
    if m_t is None:
      new, y = h_new, h_new
    else:
      keep = m_t[:, None]
      new = jnp.where(keep, h_new, h)
      y = jnp.where(keep, h_new, jnp.zeros_like(h_new))
    res = ()
    if save:
      n_grad = (1.0 - z) * (1.0 - n * n)
      gate_grad = jnp.concatenate(
          [n_grad * b_n * r * (1.0 - r), (h - n) * z * (1.0 - z), n_grad], axis=-1)
      res = (h, gate_grad, r, z)
    return new, (y, res)

  final, (ys, res) = jax.lax.scan(body, carry, (xs, mask), reverse=reverse)
  return final, ys, res


def _gru_scan_bwd(reverse, residuals, cotangents):
  params, xs, mask, (h_prev, gate_grads, resets, updates) = residuals
  dh_final, dys = cotangents
  w_ih, w_hh = params['w_ih'], params['w_hh']
  w_hh_t = w_hh.T  # transposed once, outside the loop
  hidden = w_hh.shape[0]

  def body(dh, inputs):
    dy_t, m_t, gate_grad, r, z = inputs
    dh_t = dh + dy_t
    if m_t is not None:
      keep = m_t[:, None]
      dh_t = jnp.where(keep, dh_t, 0)
    dg_x = jnp.concatenate([dh_t, dh_t, dh_t], axis=-1) * gate_grad
    # The hidden-side n pre-activation b_n reaches n through r * b_n.
    dg_h = jnp.concatenate([dg_x[:, :2 * hidden], dg_x[:, 2 * hidden:] * r], axis=-1)
    dg_x, dg_h = dg_x.astype(w_hh.dtype), dg_h.astype(w_hh.dtype)
    dh_p = dh_t * z + jnp.dot(dg_h, w_hh_t).astype(dh.dtype)
    if m_t is not None:
      # A padded step left the carry unchanged: its gradient passes straight through.
      dh_p = jnp.where(keep, dh_p, dh)
    return dh_p, (dg_x, dg_h)

  dh0, (dg_x, dg_h) = jax.lax.scan(body, dh_final, (dys, mask, gate_grads, resets, updates),
                                   reverse=not reverse)
  d_params = {'w_ih': sum_over_steps(xs, dg_x), 'w_hh': sum_over_steps(h_prev, dg_h),
              'b_ih': jnp.sum(dg_x, axis=(0, 1)), 'b_hh': jnp.sum(dg_h, axis=(0, 1))}
  d_params = {k: v.astype(params[k].dtype) for k, v in d_params.items()}
  dxs = jnp.dot(dg_x, w_ih.T).astype(xs.dtype)
  return d_params, dxs, None, dh0.astype(h_prev.dtype)


_gru_scan = fused_scan(_forward, _gru_scan_bwd)


def gru_scan(params: Mapping[str, Array], xs: Array, mask: Array | None, carry: Array, *,
             reverse: bool = False) -> tuple[Array, Array]:
  """One GRU direction over time with the fused backward pass.

  Same contract as ``masked_scan(GRU_CELL, ...)``: ``params`` ``{'w_ih' [E, 3H],
  'w_hh' [H, 3H], 'b_ih' [3H], 'b_hh' [3H]}``, ``xs`` time-major ``[T, B, E]``, ``mask``
  ``[T, B]`` bool or ``None``, ``carry`` ``h`` ``[B, H]``. Returns ``(h_T, ys [T, B, H])``
  with ``ys`` 0 at padded steps. Differentiable w.r.t. params, ``xs`` and ``carry``.
  """
  params = {k: params[k] for k in ('w_ih', 'w_hh', 'b_ih', 'b_hh')}
  if mask is not None:
    mask = mask.astype(bool)
  return _gru_scan(reverse, params, xs, mask, carry)
