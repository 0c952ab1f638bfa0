"""Checked conversion of PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.*Cell`` state dicts to
seqjax recurrent parameters (see ``seqjax.layers.recurrent`` for the layout).

PyTorch stores ``weight_ih_l{k}`` ``[G*H, in]``, ``weight_hh_l{k}`` ``[G*H, H]``,
``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[G*H]`` (and ``_reverse`` copies for the backward
direction); each cell's ``CellDef.from_torch`` maps one direction to seqjax's arrays.
Missing, extra or mis-shaped keys raise ``ValueError`` naming the key.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.recurrent import CellDef

Array = jax.Array

_TORCH_NAMES = ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')


def _take(weights: Mapping[str, np.ndarray], key: str,
          shape: tuple[int, ...]) -> np.ndarray:
  if key not in weights:
    raise ValueError(f'missing PyTorch weight {key!r}')
  value = np.asarray(weights[key])
  if value.shape != shape:
    raise ValueError(f'PyTorch weight {key!r} has shape {value.shape}; expected {shape}')
  return value


def _infer_sizes(weights: Mapping[str, np.ndarray], suffix: str) -> tuple[int, int]:
  """``(input_size, hidden_size)`` from ``weight_ih{suffix}`` and ``weight_hh{suffix}``."""
  for key in (f'weight_ih{suffix}', f'weight_hh{suffix}'):
    if key not in weights:
      raise ValueError(f'missing PyTorch weight {key!r}')
  hidden = np.shape(weights[f'weight_hh{suffix}'])[-1]
  return np.shape(weights[f'weight_ih{suffix}'])[-1], hidden


def _convert(cell: CellDef, weights: Mapping[str, np.ndarray], suffix: str,
             input_size: int, hidden: int) -> dict[str, Array]:
  gh = cell.num_gates * hidden
  parts = (_take(weights, f'weight_ih{suffix}', (gh, input_size)),
           _take(weights, f'weight_hh{suffix}', (gh, hidden)),
           _take(weights, f'bias_ih{suffix}', (gh,)),
           _take(weights, f'bias_hh{suffix}', (gh,)))
  parts = [np.asarray(p, np.float64) for p in parts]  # sum biases before rounding
  return {k: jnp.asarray(v, jnp.float32) for k, v in cell.from_torch(*parts).items()}


def _reject_extra(weights: Mapping[str, np.ndarray], used: set[str]) -> None:
  extra = sorted(set(weights) - used)
  if extra:
    raise ValueError(f'unexpected PyTorch weight {extra[0]!r}: check num_layers and '
                     'bidirectional (bias=False and proj_size>0 are not supported)')


def stack_params_from_torch(cell: CellDef, weights: Mapping[str, np.ndarray], *,
                            num_layers: int, bidirectional: bool) -> dict[str, Any]:
  """PyTorch ``nn.LSTM``/``nn.GRU`` state dict -> the stack's ``'params'`` collection.

  Keys ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and, for
  bidirectional stacks, the same with the ``_reverse`` suffix. Missing, extra or
  mis-shaped keys raise ``ValueError`` naming the key.
  """
  dirs = (('fwd', ''), ('bwd', '_reverse')) if bidirectional else (('fwd', ''),)
  suffixes = [f'_l{k}{rev}' for k in range(num_layers) for _, rev in dirs]
  # Extra keys first: they point at a wrong num_layers/bidirectional more directly.
  _reject_extra(weights, {f'{w}{s}' for w in _TORCH_NAMES for s in suffixes})
  input_size, hidden = _infer_sizes(weights, '_l0')
  params = {}
  for k in range(num_layers):
    width = input_size if k == 0 else hidden * len(dirs)
    params[f'layers_{k}'] = {d: _convert(cell, weights, f'_l{k}{rev}', width, hidden)
                             for d, rev in dirs}
  return params


def cell_params_from_torch(cell: CellDef,
                           weights: Mapping[str, np.ndarray]) -> dict[str, Array]:
  """PyTorch ``nn.LSTMCell``/``nn.GRUCell`` state dict (``weight_ih``, ``weight_hh``,
  ``bias_ih``, ``bias_hh``) -> the cell module's ``'params'`` collection."""
  _reject_extra(weights, set(_TORCH_NAMES))
  input_size, hidden = _infer_sizes(weights, '')
  return _convert(cell, weights, '', input_size, hidden)
