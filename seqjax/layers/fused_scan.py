"""Custom-VJP wiring shared by the hand-written (cuDNN-style) recurrent scans.

A fused scan runs one direction of a recurrent layer over time with a backward pass written
by hand: its forward ``lax.scan`` saves each step's local derivatives, its reverse scan
carries only the state gradients, and the weight gradients come afterwards from large
matmuls over all ``T * B`` rows (:func:`sum_over_steps`) instead of per-step outer products
accumulated inside the loop. Each family keeps its own forward and backward in its own file
(``lstm_vjp.py``, ``gru_vjp.py``) and hands them to its ``CellDef`` as ``fused_scan``; the
wiring below is what they share.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

Array = jax.Array


def fused_scan(forward: Callable, backward: Callable) -> Callable:
  """``scan(reverse, params, xs, mask, carry) -> (final, ys)`` with a custom VJP.

  ``forward(reverse, params, xs, mask, carry, save)`` returns ``(final, ys, residuals)``
  (``residuals`` only when ``save``); ``backward(reverse, (params, xs, mask, residuals),
  ((d_final, d_ys)))`` returns the cotangents of ``(params, xs, mask, carry)``.
  ``reverse`` is static.
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
