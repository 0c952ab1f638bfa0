"""Gated recurrent unit (Cho et al. 2014), PyTorch ``nn.GRU`` semantics.

Per time step, with ``x_t`` ``[batch, input]`` and the state ``h`` ``[batch, H]``:

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))  candidate
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Gate blocks in PyTorch's order ``(r, z, n)`` along the last axis, computed by one fused
matmul pair ``x_t @ w_ih + b_ih`` and ``h @ w_hh + b_hh``. Unlike the LSTM, the two
biases cannot be merged: ``b_hn`` sits inside ``r_t ⊙ (...)``, so both are kept whole.
:class:`GRU` trains through the fused scan with a hand-written backward pass
(:mod:`seqjax.layers.gru_vjp`) unless ``impl`` says otherwise (site ``rnn``).

Parameter layout (``variables['params']`` of :class:`GRU`)::

    layers_{k}/fwd/w_ih  [input_k, 3H]   input_0 = input_size, input_k = H * directions
    layers_{k}/fwd/w_hh  [H, 3H]
    layers_{k}/fwd/b_ih  [3H]
    layers_{k}/fwd/b_hh  [3H]
    layers_{k}/bwd/...   same, bidirectional stacks only

:class:`GRUCell` has the same four arrays at its top level. Init: PyTorch's
``U(-1/sqrt(H), 1/sqrt(H))`` for every array. State: a tuple over layers of
``{'fwd': h}`` (plus ``'bwd'`` for a bidirectional final state).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.gru_vjp import gru_scan
from seqjax.layers.recurrent import CellDef, RecurrentCell, RecurrentStack
from seqjax.layers.recurrent_torch import cell_params_from_torch, stack_params_from_torch

Array = jax.Array


def gru_param_shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
  g = 3 * hidden_size
  return {'w_ih': (input_size, g), 'w_hh': (hidden_size, g), 'b_ih': (g,), 'b_hh': (g,)}


def gru_input_projection(params, x: Array) -> Array:
  """``x`` ``[..., input]`` -> ``x @ w_ih + b_ih`` ``[..., 3H]``."""
  return jnp.dot(x, params['w_ih']) + params['b_ih']


def gru_recurrence(params, h: Array, xp_t: Array) -> Array:
  """One GRU step given the projected input ``xp_t`` ``[batch, 3H]``; returns ``h``."""
  hp = jnp.dot(h.astype(params['w_hh'].dtype), params['w_hh']) + params['b_hh']
  xr, xz, xn = jnp.split(xp_t, 3, axis=-1)
  hr, hz, hn = jnp.split(hp, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return (1.0 - z) * n + z * h


def gru_init_carry(batch_size: int, hidden_size: int, dtype) -> Array:
  return jnp.zeros((batch_size, hidden_size), dtype)


def _gru_from_torch(w_ih, w_hh, b_ih, b_hh) -> dict[str, np.ndarray]:
  return {'w_ih': w_ih.T, 'w_hh': w_hh.T, 'b_ih': b_ih, 'b_hh': b_hh}


GRU_CELL = CellDef(
    name='GRU', num_gates=3, param_shapes=gru_param_shapes,
    input_projection=gru_input_projection, recurrence=gru_recurrence,
    output=lambda h: h, init_carry=gru_init_carry, from_torch=_gru_from_torch,
    fused_scan=gru_scan)


class GRU(RecurrentStack):
  """Multi-layer (bi)GRU: ``x`` ``[batch, time, input_size]`` -> ``[batch, time, H * D]``.

  ``GRU(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
  impl='auto', dtype=jnp.float32)``; methods as
  :class:`seqjax.layers.recurrent.RecurrentStack`, the state per layer is ``h``.
  """

  cell: ClassVar[CellDef] = GRU_CELL


class GRUCell(RecurrentCell):
  """One GRU step: ``(h, x_t [batch, input_size]) -> (h, h)``; ``initial_carry(batch)``."""

  cell: ClassVar[CellDef] = GRU_CELL


def gru_params_from_torch(weights: Mapping[str, np.ndarray], *, num_layers: int,
                          bidirectional: bool) -> dict:
  """PyTorch ``nn.GRU`` state dict (NumPy arrays) -> :class:`GRU` ``'params'``.

  Weights are transposed, biases kept; ``_reverse`` keys fill ``'bwd'``.
  Missing/extra/mis-shaped keys raise ``ValueError`` naming the key.
  """
  return stack_params_from_torch(GRU_CELL, weights, num_layers=num_layers,
                                 bidirectional=bidirectional)


def gru_cell_params_from_torch(weights: Mapping[str, np.ndarray]) -> dict:
  """PyTorch ``nn.GRUCell`` state dict -> :class:`GRUCell` ``'params'``."""
  return cell_params_from_torch(GRU_CELL, weights)
