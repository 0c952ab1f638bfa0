"""Shared machinery of the gated recurrent families (LSTM, GRU).

A recurrent family is described by a :class:`CellDef`: a bundle of *pure* functions
(parameter shapes, input projection, one recurrent update, carry initialisation). Everything
else is generic and lives here, written once for every cell:

* :func:`masked_scan` — one direction of one layer over time with ``jax.lax.scan``. On a
  padded token the carry is kept (``carry = where(mask_t, new, old)``) and the output is 0,
  so padding never advances the state and the result is correct for any mask.
* a cell's ``fused_scan`` (the LSTM's :func:`seqjax.layers.lstm_vjp.lstm_scan`, the GRU's
  :func:`seqjax.layers.gru_vjp.gru_scan`) — the equivalent of :func:`masked_scan` with a
  hand-written (cuDNN-style) backward pass. Which one a stack runs is the implementation
  switch ``impl``, site ``rnn`` (:data:`RNN`): ``fused`` (what ``auto`` picks when the
  cell has a fused scan), ``autodiff`` (autodiff of :func:`masked_scan`, the input
  projection inside the loop) or ``hoisted`` (the same with the input projection of all
  steps as one matmul before the loop); all compute the same function and gradients.
* :class:`RecurrentStack` — PyTorch ``nn.LSTM``/``nn.GRU``-style stacking: ``num_layers``
  layers, optional bidirectional layers, dropout between layers, with the seqjax mixer
  interface (``__call__``/``init_state``/``step``, see ``seqjax.layers.base``).
* :class:`RecurrentCell` — a single-step module with the same parameter layout as one
  direction of one layer, for use inside ``flax.linen.scan`` (e.g. a decoder).
* PyTorch state-dict conversion lives in ``seqjax.layers.recurrent_torch``.

The backward direction of a bidirectional layer is a reverse scan with the same masking.
With right padding the zero initial state is not advanced by the trailing padded tokens, so
the reverse pass effectively starts at each sequence's last real token (the effect of
Flax's sst2 ``flip_sequences(lengths)``, without gathering).

Dropout between layers follows PyTorch (``nn.LSTM(dropout=p)``): applied to the output of
every layer except the last, only when ``deterministic=False``, rng stream ``'dropout'``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.base import State, not_streamable
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array
Params = Mapping[str, Array]
Carry = Any  # a pytree of [batch, hidden] arrays, e.g. (h, c) for an LSTM, h for a GRU


@dataclasses.dataclass(frozen=True)
class CellDef:
  """Pure description of a gated recurrent cell with ``num_gates`` gate blocks.

  Attributes:
    name: family name used in error messages (``'LSTM'``).
    num_gates: gate blocks stacked along the output axis of the input weights (4 for an
      LSTM, 3 for a GRU); PyTorch's ``weight_ih`` is ``[num_gates * hidden, input]``.
    param_shapes: ``(input_size, hidden_size) -> {name: shape}``.
    input_projection: ``(params, x[..., input]) -> xp[..., num_gates * hidden]``, the part
      of the pre-activations that depends on the input only (so it can be hoisted out of
      the time loop and computed for all steps in one matmul).
    recurrence: ``(params, carry, xp_t[batch, G*H]) -> carry``, one time step given the
      projected input. Pure, so a custom VJP can later wrap the whole scan.
    output: ``carry -> h[batch, hidden]``, the layer output at that step.
    init_carry: ``(batch, hidden, dtype) -> carry`` of zeros.
    from_torch: ``(w_ih, w_hh, b_ih, b_hh) -> params`` from PyTorch's layout
      (``[G*H, in]``, ``[G*H, H]``, ``[G*H]``, ``[G*H]``) as NumPy arrays.
    fused_scan: ``(params, xs, mask, carry, *, reverse) -> (final, ys)``, the same
      contract as :func:`masked_scan` with a hand-written backward pass, or ``None``.
  """

  name: str
  num_gates: int
  param_shapes: Callable[[int, int], dict[str, tuple[int, ...]]]
  input_projection: Callable[[Params, Array], Array]
  recurrence: Callable[[Params, Carry, Array], Carry]
  output: Callable[[Carry], Array]
  init_carry: Callable[[int, int, Any], Carry]
  from_torch: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                       dict[str, np.ndarray]]
  fused_scan: Callable[..., tuple[Carry, Array]] | None = None


# ``auto`` is the fused scan on every platform (for a cell that has one): on CPU the
# LSTM's training step measured 1.13-1.17x and the GRU's 1.11-1.12x faster than autodiff
# (BENCHMARKS.md, section 1); it is the cuDNN design on GPUs. Hoisting the input
# projection measured slower on CPU and is kept as a choice.
RNN = Switch('rnn', ('fused', 'autodiff', 'hoisted'), lambda platform, time: 'fused',
             'LSTM/GRU over time: hand-written backward pass (fused), autodiff of the '
             'scan, or autodiff with the input projection hoisted; layers/recurrent.py')


def pytorch_uniform(hidden_size: int) -> Callable[..., Array]:
  """PyTorch's default RNN init: every weight and bias ``~ U(-1/sqrt(H), 1/sqrt(H))``."""
  bound = 1.0 / math.sqrt(hidden_size)

  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def carry_dtype(dtype: Any) -> Any:
  """State dtype for a computation dtype: at least float32, because the LSTM cell state
  accumulates over many steps and bfloat16 would lose it."""
  return jnp.promote_types(dtype, jnp.float32)


def cell_step(cell: CellDef, params: Params, carry: Carry,
              x_t: Array) -> tuple[Carry, Array]:
  """One step of one direction: ``x_t`` ``[batch, input]`` -> (carry, ``h`` ``[batch, H]``)."""
  carry = cell.recurrence(params, carry, cell.input_projection(params, x_t))
  return carry, cell.output(carry)


def masked_scan(cell: CellDef, params: Params, xs: Array, mask: Array | None,
                carry: Carry, *, reverse: bool = False,
                hoist: bool = False) -> tuple[Carry, Array]:
  """Runs one direction of one layer over time.

  Args:
    cell: the cell definition.
    params: that direction's parameters, already cast to the computation dtype.
    xs: inputs, time-major ``[time, batch, input]``.
    mask: ``[time, batch]`` bool (True = real token) or ``None`` (all real).
    carry: initial carry (pytree of ``[batch, H]``).
    reverse: scan from the last position to the first (backward direction).
    hoist: compute the input projection for all steps in one ``[time*batch, input]``
      matmul before the scan (cuDNN style) instead of once per step inside it.

  Returns:
    ``(final_carry, ys)``; ``ys`` ``[time, batch, H]`` is 0 at padded positions and
    ``final_carry`` is the carry after the last real token visited (for ``reverse``: after
    position 0).
  """
  if hoist:
    xs = cell.input_projection(params, xs)
    project = lambda x_t: x_t
  else:
    project = lambda x_t: cell.input_projection(params, x_t)

  def body(carry, inputs):
    x_t, m_t = inputs
    new = cell.recurrence(params, carry, project(x_t))
    y_t = cell.output(new)
    if m_t is None:
      return new, y_t
    keep = m_t[:, None]
    new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
    return new, jnp.where(keep, y_t, jnp.zeros_like(y_t))

  return jax.lax.scan(body, carry, (xs, mask), reverse=reverse)


def _make_params(module: nn.Module, cell: CellDef, input_size: int,
                 hidden_size: int) -> dict[str, Array]:
  init = pytorch_uniform(hidden_size)
  return {name: module.param(name, init, shape)
          for name, shape in cell.param_shapes(input_size, hidden_size).items()}


class _DirectionParams(nn.Module):
  """Holds one direction's parameters; calling it returns them as a dict."""

  cell: CellDef
  input_size: int
  hidden_size: int

  def setup(self):
    self.arrays = _make_params(self, self.cell, self.input_size, self.hidden_size)

  def __call__(self) -> dict[str, Array]:
    return dict(self.arrays)


class _LayerParams(nn.Module):
  """Holds one layer's parameters: ``{'fwd': {...}}`` or ``{'fwd': ..., 'bwd': ...}``."""

  cell: CellDef
  input_size: int
  hidden_size: int
  bidirectional: bool

  def setup(self):
    self.fwd = _DirectionParams(self.cell, self.input_size, self.hidden_size)
    if self.bidirectional:
      self.bwd = _DirectionParams(self.cell, self.input_size, self.hidden_size)

  def __call__(self) -> dict[str, dict[str, Array]]:
    out = {'fwd': self.fwd()}
    if self.bidirectional:
      out['bwd'] = self.bwd()
    return out


class RecurrentStack(nn.Module):
  """Multi-layer, optionally bidirectional recurrent network (PyTorch ``nn.LSTM`` style).

  Subclasses set the class attribute ``cell``. Parameters:
  ``params['layers_{k}']['fwd'|'bwd'][name]`` with names from ``cell.param_shapes``.
  State (``init_state``, ``initial_state``, the returned final state): a tuple over layers
  of ``{'fwd': carry}`` (plus ``'bwd'`` for bidirectional stacks).

  Attributes:
    input_size: width of ``x``.
    hidden_size: ``H``, state width per direction; the output width is ``H`` or ``2H``
      (forward half first, then backward, as PyTorch).
    num_layers: stacked layers; layer ``k > 0`` reads the previous layer's output.
    bidirectional: add a backward direction per layer (then not causal, no streaming).
    dropout: dropout probability on every layer's output except the last.
    impl: implementation switch, site ``rnn`` (see the module docstring): ``fused`` (the
      cell's scan with a hand-written backward pass; ``auto`` when the cell has one),
      ``autodiff`` or ``hoisted``; same function and gradients (tested to 1e-5).
    dtype: computation dtype (params stay float32; the state is at least float32).
  """

  cell: ClassVar[CellDef]

  input_size: int
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  impl: str = AUTO
  dtype: Any = jnp.float32

  switches: ClassVar[tuple[Switch, ...]] = (RNN,)

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    name = type(self).__name__
    for arg in ('input_size', 'hidden_size', 'num_layers'):
      if getattr(self, arg) < 1:
        raise ValueError(f'{name}: {arg}={getattr(self, arg)} must be a positive integer')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'{name}: dropout={self.dropout} must be in [0, 1)')
    if RNN.choice(self.impl) == 'fused' and self.cell.fused_scan is None:
      raise ValueError(f"impl: rnn:fused needs a fused scan, which the {self.cell.name} "
                       "cell does not have; use rnn:autodiff")

  def setup(self):
    self.check()
    width = self.hidden_size * self.num_directions
    self.layers = [
        _LayerParams(self.cell, self.input_size if k == 0 else width, self.hidden_size,
                     self.bidirectional) for k in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def directions(self) -> tuple[str, ...]:
    return ('fwd', 'bwd') if self.bidirectional else ('fwd',)

  @property
  def is_causal(self) -> bool:
    return not self.bidirectional

  @property
  def output_size(self) -> int:
    return self.hidden_size * self.num_directions

  def _params(self) -> list[dict[str, dict[str, Array]]]:
    """All layers' params, cast once to the computation dtype (outside any scan)."""
    cast = lambda p: p.astype(self.dtype)
    return [jax.tree.map(cast, layer()) for layer in self.layers]

  def _zero_state(self, batch_size: int) -> State:
    dt = carry_dtype(self.dtype)
    return tuple({d: self.cell.init_carry(batch_size, self.hidden_size, dt)
                  for d in self.directions} for _ in range(self.num_layers))

  def _conform_state(self, state: State, zeros: State) -> State:
    """``state`` rebuilt with the exact tree and dtypes of ``zeros``. Only the leaf order
    and shapes must match, so lists restored from a checkpoint in place of tuples work."""
    leaves, ref = jax.tree.leaves(state), jax.tree.leaves(zeros)
    if (len(leaves) != len(ref)
        or any(np.shape(a) != r.shape for a, r in zip(leaves, ref))):
      raise ValueError(
          f'{type(self).__name__}: initial_state does not match init_state: expected '
          f'{jax.tree.structure(zeros)} with leaves of shape {ref[0].shape}')
    return jax.tree.unflatten(jax.tree.structure(zeros),
                              [jnp.asarray(a, r.dtype) for a, r in zip(leaves, ref)])

  def _check_input(self, x: Array, what: str, ndim: int) -> None:
    if x.ndim != ndim or x.shape[-1] != self.input_size:
      raise ValueError(f'{type(self).__name__}: {what} has shape {x.shape}; expected '
                       f'{ndim} dims ending in input_size={self.input_size}')

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True, initial_state: State | None = None,
               return_final_state: bool = False) -> Array | tuple[Array, State]:
    """Parallel mode.

    Args:
      x: ``[batch, time, input_size]``.
      mask: ``[batch, time]`` bool, True on real tokens; ``None`` = all real. Padded
        tokens never advance the state and give output 0.
      deterministic: disables the between-layer dropout.
      initial_state: optional state (structure of ``init_state``, including ``'bwd'``
        for bidirectional stacks); zeros by default.
      return_final_state: also return the final state (structure of ``init_state``):
        forward = state after each sequence's last real token, backward = state after
        position 0 (PyTorch's ``h_n``/``c_n``). Lets a parallel prefill be continued by
        ``step``.

    Returns:
      ``y`` ``[batch, time, output_size]``, or ``(y, final_state)``.
    """
    self._check_input(x, 'x', 3)
    batch, time = x.shape[:2]
    if mask is not None and mask.shape != (batch, time):
      raise ValueError(f'{type(self).__name__}: mask has shape {mask.shape}; expected '
                       f'[batch, time] = {(batch, time)}')
    zeros = self._zero_state(batch)
    if initial_state is None:
      initial_state = zeros
    else:
      initial_state = self._conform_state(initial_state, zeros)
    params = self._params()
    # Time-major once for the whole stack: lax.scan iterates over the leading axis.
    h = jnp.swapaxes(x, 0, 1).astype(self.dtype)
    m = None if mask is None else jnp.swapaxes(mask, 0, 1).astype(bool)
    how = RNN.resolve(self.impl, time)
    fused = self.cell.fused_scan if how == 'fused' else None
    final = []
    for k in range(self.num_layers):
      if k > 0:
        h = self.drop(h, deterministic=deterministic)
      outs, layer_final = [], {}
      for d in self.directions:
        if fused is not None:
          layer_final[d], y = fused(params[k][d], h, m, initial_state[k][d],
                                    reverse=d == 'bwd')
        else:
          layer_final[d], y = masked_scan(
              self.cell, params[k][d], h, m, initial_state[k][d], reverse=d == 'bwd',
              hoist=how == 'hoisted')
        outs.append(y)
      h = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
      h = h.astype(self.dtype)
      final.append(layer_final)
    y = jnp.swapaxes(h, 0, 1)
    return (y, tuple(final)) if return_final_state else y

  def init_state(self, batch_size: int) -> State:
    """Zero state: tuple over layers of ``{'fwd': carry}``, each leaf ``[batch, H]``."""
    if not self.is_causal:
      raise not_streamable(f'{type(self).__name__}(bidirectional=True)')
    return self._zero_state(batch_size)

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token through every layer: ``x_t`` ``[batch, input_size]`` -> ``y_t``
    ``[batch, hidden_size]``. No dropout (streaming is inference)."""
    if not self.is_causal:
      raise not_streamable(f'{type(self).__name__}(bidirectional=True)')
    self._check_input(x_t, 'x_t', 2)
    h = x_t.astype(self.dtype)
    new_state = []
    for layer_params, layer_state in zip(self._params(), state):
      carry, h = cell_step(self.cell, layer_params['fwd'], layer_state['fwd'], h)
      h = h.astype(self.dtype)
      new_state.append({'fwd': carry})
    return tuple(new_state), h


class RecurrentCell(nn.Module):
  """Single-step cell with the parameter names of one stack direction (top level here).

  ``__call__(carry, x_t)`` with ``x_t`` ``[batch, input_size]`` returns ``(carry, h_t)``,
  ``h_t`` ``[batch, hidden_size]``; made for ``flax.linen.scan`` (broadcast ``'params'``).
  Subclasses set the class attribute ``cell``.
  """

  cell: ClassVar[CellDef]

  input_size: int
  hidden_size: int
  dtype: Any = jnp.float32

  def setup(self):
    self.arrays = _make_params(self, self.cell, self.input_size, self.hidden_size)

  def initial_carry(self, batch_size: int) -> Carry:
    return self.cell.init_carry(batch_size, self.hidden_size, carry_dtype(self.dtype))

  def __call__(self, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
    params = {k: v.astype(self.dtype) for k, v in self.arrays.items()}
    carry, h = cell_step(self.cell, params, carry, x_t.astype(self.dtype))
    return carry, h.astype(self.dtype)
