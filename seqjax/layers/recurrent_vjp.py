"""Fused LSTM scan with a hand-written backward pass (cuDNN-style training step).

Plain autodiff of a ``lax.scan`` LSTM makes the backward loop do, per step, the hidden
matmul *and* an outer product ``h_{t-1}^T dz_t`` accumulated into ``dW_hh`` (plus the
input-side ``x_t^T dz_t`` and ``dz_t W_ih^T`` when the projection is inside the loop): many
small, bandwidth-bound updates of a ``[H, 4H]`` accumulator. :func:`lstm_scan` instead

* forward: a ``lax.scan`` computing ``x_t W_ih + h_{t-1} W_hh + b`` per step that saves
  only what the backward pass needs: each step's local derivatives (``[B, 4H]`` gate
  factors and ``[B, H]`` forget gate and ``dh -> dc`` factor, see :func:`_forward`) and
  ``h_{t-1}`` ``[B, H]``. Saving derivatives instead of activations takes the ``tanh``
  recomputation and most multiplies out of the backward loop: the bare scan's train step
  went from about 1.15x to 1.25x Flax's cell (medians of three same-process runs), the
  ``LSTM`` module's in ``scripts/benchmarks/lstm.py`` from 1.10x to 1.13-1.17x
  (2026-11-24). The input projection stays *inside* the loop: hoisting it as one
  ``[T*B, E] @ [E, 4H]`` matmul writes and re-reads a ``[T, B, 4H]`` buffer (32 MB at the
  benchmark shape); XLA:CPU ran that matmul at 107 GFLOP/s against ~165 for the per-step
  ones, and the forward scan measured 1.7x slower hoisted (120 vs 70 ms). Also slower or
  no faster: one matmul per step on ``[x_t, h]`` with stacked weights, hoisting per chunk
  of 8-32 steps, packing the residuals into one array;
* backward: a reverse ``lax.scan`` whose carry is only ``(dh, dc)`` and whose per-step
  work is a few elementwise products and one ``[B, 4H] @ [4H, H]`` matmul; it emits the
  pre-activation gradients ``dz_t`` ``[B, 4H]``;
* then ``dW_hh = H_prev^T dZ``, ``dW_ih = X^T dZ``, ``db = sum dZ`` and ``dX = dZ W_ih^T``
  as four large matmuls over all ``T*B`` rows.

Where the time goes (XLA:CPU profile of the B=32, T=256, E=H=256 step, 2026-11-24): the
3 x 256 per-step ``[32, 256] @ [256, 1024]``-sized matmuls about 43 % (~108 us each,
~155 GFLOP/s), the four large matmuls about 38 %, the rest (zero-filling fresh output
buffers, elementwise kernels, concatenations) about 19 %. Both matmul groups already run
at 80-95 % of a large square matmul's rate, so little is left to gain at this level.

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
gradient streams, one for the input and one for the hidden pre-activations).
:func:`fast_scan_for` picks the fused scan for a cell.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

Array = jax.Array


def _gates(z: Array, hidden: int) -> tuple[Array, Array, Array, Array]:
  """Pre-activations ``[B, 4H]`` -> activations ``i, f, g, o`` ``[B, H]`` each."""
  i = jax.nn.sigmoid(z[:, :hidden])
  f = jax.nn.sigmoid(z[:, hidden:2 * hidden])
  g = jnp.tanh(z[:, 2 * hidden:3 * hidden])
  o = jax.nn.sigmoid(z[:, 3 * hidden:])
  return i, f, g, o


def fused_scan(forward: Callable, backward: Callable) -> Callable:
  """``scan(reverse, params, xs, mask, carry) -> (final, ys)`` with a custom VJP.

  ``forward(reverse, params, xs, mask, carry, save)`` returns ``(final, ys, residuals)``
  (``residuals`` only when ``save``); ``backward(reverse, (params, xs, mask, residuals),
  ((d_final, d_ys)))`` returns the cotangents of ``(params, xs, mask, carry)``. Shared by
  the LSTM and GRU fused scans; ``reverse`` is static.
  """
  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def scan(reverse: bool, params, xs, mask, carry):
    final, ys, _ = forward(reverse, params, xs, mask, carry, save=False)
    return final, ys

  def scan_fwd(reverse, params, xs, mask, carry):
    final, ys, res = forward(reverse, params, xs, mask, carry, save=True)
    return (final, ys), (params, xs, mask, res)

  scan.defvjp(scan_fwd, backward)
  return scan


def sum_over_steps(inputs: Array, grads: Array) -> Array:
  """``sum_t inputs_t^T grads_t`` as one matmul over all ``T*B`` rows: ``inputs``
  ``[T, B, K]``, ``grads`` ``[T, B, N]`` -> ``[K, N]`` (a weight gradient)."""
  rows = lambda a: a.reshape(-1, a.shape[-1])
  return jax.lax.dot_general(rows(inputs).astype(grads.dtype), rows(grads),
                             (((0,), (0,)), ((), ())))


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


def fast_scan_for(cell: Any) -> Callable | None:
  """The fused scan for ``cell`` (the library's LSTM or GRU cell), or ``None`` (use
  autodiff)."""
  # lazy: lstm.py and gru.py import recurrent.py, which imports this module
  from seqjax.layers.gru import GRU_CELL
  from seqjax.layers.gru_vjp import gru_scan
  from seqjax.layers.lstm import LSTM_CELL
  if cell is LSTM_CELL:
    return lstm_scan
  return gru_scan if cell is GRU_CELL else None
