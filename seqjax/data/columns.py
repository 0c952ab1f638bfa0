"""Splits held in memory as one array per field, and batches gathered from them at once.

A synthetic task serves a small split from memory (``seqjax.data.synthetic.base``). When
every example of it has the same shapes, :func:`in_memory` keeps the split as columns
(``{'inputs': [N, T], 'targets': [N, T], ...}``), serves its examples as row views of
them, and remembers the columns for the dataset it returns. ``BatchIterator`` then builds
a batch with a few fancy-indexing operations (:func:`gather`) instead of copying example
by example in Python. The batches are the same arrays either way (tested against the
per-example path); only the cost differs. Measured on the standard suite's MQAR cell
(batch 32, 24 tokens, LSTM, one core): 9.5 ms per batch example by example against
0.5 ms from columns under cProfile, a third of the member's time; see BENCHMARKS.md,
"the input side of a small step".
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Sequence

import grain
import numpy as np

from seqjax.data.spec import PAD_ID


@dataclasses.dataclass
class Columns:
  """One split's fields stacked over examples: ``arrays[name]`` is ``[N, ...]``."""

  arrays: dict[str, np.ndarray]
  _lengths: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def lengths(self, kind: str) -> np.ndarray:
    """Each example's length as the pipeline counts it (``[N]`` int64, cached per kind):
    up to its last non-PAD input token (token ids) or its full length (features), and,
    for the token kind, at least up to its last scored position."""
    if kind not in self._lengths:
      self._lengths[kind] = _lengths(self.arrays, kind)
    return self._lengths[kind]


_REGISTRY: 'weakref.WeakKeyDictionary[grain.MapDataset, Columns]' = (
    weakref.WeakKeyDictionary())


def _last_true(flags: np.ndarray) -> np.ndarray:
  """``[N, T]`` bool -> index + 1 of the last True per row (0 when there is none)."""
  t = flags.shape[1]
  return np.where(flags.any(axis=1), t - np.argmax(flags[:, ::-1], axis=1), 0)


def _lengths(arrays: dict[str, np.ndarray], kind: str) -> np.ndarray:
  inputs = arrays['inputs']
  if inputs.ndim == 2 and np.issubdtype(inputs.dtype, np.integer):
    length = _last_true(inputs != PAD_ID)
  else:
    length = np.full((len(inputs),), inputs.shape[1])
  if kind == 'token':
    length = np.maximum(length, _last_true(np.asarray(arrays['weights']) != 0))
  return length.astype(np.int64)


def in_memory(examples: Sequence[dict[str, Any]]) -> grain.MapDataset:
  """A ``grain.MapDataset`` of ``examples`` (dicts of arrays). When every field has one
  shape and dtype over the examples, the split is stored as columns (read-only) and the
  examples are row views of them; otherwise it is the list itself."""
  if not examples:
    return grain.MapDataset.source(list(examples))
  arrays = {}
  for key in examples[0]:
    values = [np.asarray(example[key]) for example in examples]
    if len({(v.shape, v.dtype) for v in values}) != 1:
      return grain.MapDataset.source(list(examples))
    arrays[key] = np.stack(values)
    arrays[key].setflags(write=False)
  dataset = grain.MapDataset.source(
      [{key: column[i] for key, column in arrays.items()} for i in range(len(examples))])
  _REGISTRY[dataset] = Columns(arrays)
  return dataset


def columns_of(dataset: Any) -> Columns | None:
  """The columns :func:`in_memory` stored for ``dataset``, or None."""
  try:
    return _REGISTRY.get(dataset)
  except TypeError:  # not weak-referenceable: never registered
    return None


def _fit(column: np.ndarray, width: int, fill) -> np.ndarray:
  """``[B, T, ...]`` -> ``[B, width, ...]``: cut, or padded with ``fill``."""
  t = column.shape[1]
  if t >= width:
    return column[:, :width]
  pad = [(0, 0), (0, width - t)] + [(0, 0)] * (column.ndim - 2)
  return np.pad(column, pad, constant_values=fill)


def gather(columns: Columns, kind: str, rows: np.ndarray, lengths: np.ndarray,
           num_real: int, width: int) -> dict[str, np.ndarray]:
  """The batch ``BatchIterator._collate`` builds, from column arrays.

  Args:
    columns: the split.
    kind: the task kind: ``'token'``, ``'classification'`` or ``'regression'``.
    rows: example index of each batch row ``[B]`` (filler rows included).
    lengths: those examples' lengths ``[B]`` (``Columns.lengths``), each <= ``width``.
    num_real: rows ``[0, num_real)`` are real; the others are filler (weight 0).
    width: padded length.
  """
  arrays = columns.arrays
  mask = np.arange(width)[None, :] < lengths[:, None]
  inputs = arrays['inputs'][rows]
  if inputs.ndim == 3:   # features [B, T, F]: zeros beyond the length
    inputs = np.where(mask[..., None], _fit(inputs, width, 0), 0).astype(np.float32)
  else:
    inputs = np.where(mask, _fit(inputs, width, PAD_ID), PAD_ID).astype(np.int32)
  real = (np.arange(len(rows)) < num_real).astype(np.float32)
  batch = {'inputs': inputs, 'mask': mask, 'example_weight': real}
  if kind == 'token':
    targets = _fit(arrays['targets'][rows], width, PAD_ID)
    weights = _fit(np.asarray(arrays['weights'][rows], np.float32), width, 0)
    batch['targets'] = np.where(mask, targets, PAD_ID).astype(np.int32)
    batch['weights'] = np.where(mask, weights * real[:, None], 0).astype(np.float32)
  else:
    dtype = np.float32 if kind == 'regression' else np.int32
    batch['label'] = np.asarray(arrays['label'][rows]).astype(dtype)
  return batch
