"""Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch ``nn.LSTM`` semantics.

Per time step, with ``x_t`` ``[batch, input]`` and the state ``(h, c)`` ``[batch, H]``:

    i_t = σ(W_i x_t + U_i h_{t-1} + b_i)     input gate: what to write
    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)     forget gate: what to erase
    g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)  candidate values
    o_t = σ(W_o x_t + U_o h_{t-1} + b_o)     output gate: what to expose
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

(the article's six equations, with ``W·[h, x]`` split into an input and a hidden matrix).
All four gates come from one fused matmul pair ``x_t @ w_ih + h @ w_hh + b``, gate blocks
in PyTorch's order ``(i, f, g, o)`` along the last axis.

Parameter layout (``variables['params']`` of :class:`LSTM`)::

    layers_{k}/fwd/w_ih  [input_k, 4H]   input_0 = input_size, input_k = H * directions
    layers_{k}/fwd/w_hh  [H, 4H]
    layers_{k}/fwd/b     [4H]            = PyTorch bias_ih + bias_hh
    layers_{k}/bwd/...   same, bidirectional stacks only

:class:`LSTMCell` has ``w_ih``, ``w_hh``, ``b`` at its top level (the layout of one
direction). Init is PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))`` for every array; note PyTorch
draws *two* biases with that law, so its summed bias has twice our bias variance.

PyTorch keeps two biases, but both enter only the same sum
``W_ih x + b_ih + W_hh h + b_hh``, so a single ``b = b_ih + b_hh`` gives the same
pre-activations (the same real number; in floating point only the summation order
differs). :func:`lstm_params_from_torch` therefore sums them.

State: ``init_state(batch)`` is a tuple over layers of ``{'fwd': (h, c)}``;
``return_final_state=True`` returns that structure (with ``'bwd'`` when bidirectional),
holding PyTorch's ``h_n``/``c_n``: e.g. the article's ``cat(h_n[-2], h_n[-1])`` is
``concat([state[-1]['fwd'][0], state[-1]['bwd'][0]], -1)``.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.lstm_vjp import lstm_scan
from seqjax.layers.recurrent import CellDef, RecurrentCell, RecurrentStack
from seqjax.layers.recurrent_torch import cell_params_from_torch, stack_params_from_torch

Array = jax.Array
LSTMCarry = tuple[Array, Array]  # (h, c), each [batch, H]


def lstm_param_shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
  g = 4 * hidden_size
  return {'w_ih': (input_size, g), 'w_hh': (hidden_size, g), 'b': (g,)}


def lstm_input_projection(params, x: Array) -> Array:
  """``x`` ``[..., input]`` -> ``x @ w_ih + b`` ``[..., 4H]`` (input-only part of the gates)."""
  return jnp.dot(x, params['w_ih']) + params['b']


def lstm_recurrence(params, carry: LSTMCarry, xp_t: Array) -> LSTMCarry:
  """One LSTM step given the projected input ``xp_t`` ``[batch, 4H]``; returns ``(h, c)``."""
  h, c = carry
  z = xp_t + jnp.dot(h.astype(params['w_hh'].dtype), params['w_hh'])
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
  h = jax.nn.sigmoid(zo) * jnp.tanh(c)
  return h, c


def lstm_init_carry(batch_size: int, hidden_size: int, dtype) -> LSTMCarry:
  zeros = jnp.zeros((batch_size, hidden_size), dtype)
  return zeros, zeros


def _lstm_from_torch(w_ih, w_hh, b_ih, b_hh) -> dict[str, np.ndarray]:
  return {'w_ih': w_ih.T, 'w_hh': w_hh.T, 'b': b_ih + b_hh}


LSTM_CELL = CellDef(
    name='LSTM', num_gates=4, param_shapes=lstm_param_shapes,
    input_projection=lstm_input_projection, recurrence=lstm_recurrence,
    output=lambda carry: carry[0], init_carry=lstm_init_carry,
    from_torch=_lstm_from_torch, fused_scan=lstm_scan)


class LSTM(RecurrentStack):
  """Multi-layer (bi)LSTM: ``x`` ``[batch, time, input_size]`` -> ``[batch, time, H * D]``.

  ``LSTM(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
  impl='auto', dtype=jnp.float32)``; trains through the fused scan of
  :mod:`seqjax.layers.lstm_vjp` unless ``impl`` says otherwise; see
  :class:`seqjax.layers.recurrent.RecurrentStack` for the methods and the module docstring
  for equations and parameter layout. ``D`` = 2 if bidirectional (forward half first).
  """

  cell: ClassVar[CellDef] = LSTM_CELL


class LSTMCell(RecurrentCell):
  """One LSTM step: ``(carry=(h, c), x_t [batch, input_size]) -> (carry, h_t [batch, H])``.

  ``LSTMCell(input_size, hidden_size, dtype=jnp.float32)``; ``initial_carry(batch_size)``
  gives zeros. Params ``w_ih``, ``w_hh``, ``b`` as one :class:`LSTM` direction.
  """

  cell: ClassVar[CellDef] = LSTM_CELL


def lstm_params_from_torch(weights: Mapping[str, np.ndarray], *, num_layers: int,
                           bidirectional: bool) -> dict:
  """PyTorch ``nn.LSTM`` state dict (NumPy arrays) -> :class:`LSTM` ``'params'``.

  ``weight_ih_l{k}`` ``[4H, in]`` and ``weight_hh_l{k}`` ``[4H, H]`` are transposed;
  ``bias_ih_l{k} + bias_hh_l{k}`` becomes ``b`` (exact, see the module docstring);
  ``_reverse`` keys fill ``'bwd'``. Missing/extra/mis-shaped keys raise ``ValueError``.
  """
  return stack_params_from_torch(LSTM_CELL, weights, num_layers=num_layers,
                                 bidirectional=bidirectional)


def lstm_cell_params_from_torch(weights: Mapping[str, np.ndarray]) -> dict:
  """PyTorch ``nn.LSTMCell`` state dict -> :class:`LSTMCell` ``'params'``."""
  return cell_params_from_torch(LSTM_CELL, weights)
