"""Examples -> padded batches, with seeded per-epoch shuffling, sharding and exact resume.

``make_iterator(dataset, spec, batch_size=..., seed=...)`` returns a ``BatchIterator`` (a
``grain.DatasetIterator``) over dicts of NumPy arrays::

    'inputs'         int32 [B, T]  (or float32 [B, T, F] for continuous inputs)
    'mask'           bool  [B, T]  True on real input tokens (right padding)
    'example_weight' float32 [B]   1 for real examples, 0 for filler rows
    classification / regression:  'label'  int32 [B] / float32 [B]
    token:    'targets' int32 [B, T], 'weights' float32 [B, T]
    seq2seq:  'decoder_inputs' int32 [B, Tt] (BOS + targets[:-1]), 'targets' int32 [B, Tt],
              'weights' float32 [B, Tt] (1 on real target tokens incl. EOS)

Order. Epoch ``e`` visits all ``n`` examples in the permutation drawn from
``SeedSequence([seed, e])`` (the natural order when ``shuffle=False``), so the same seed
gives the same stream, and epochs differ. Global batch ``k`` of an epoch is positions
``[k * batch_size, (k + 1) * batch_size)`` of that order; batches never straddle an epoch.

Shards. ``batch_size`` is the *global* batch. Process ``shard_index`` of ``shard_count``
gets rows ``[i * b, (i + 1) * b)`` of every global batch, ``b = batch_size /
shard_count``: the global batch at step ``k`` is the same examples in the same order
whatever the number of processes (and devices), so a run reproduces on any topology.
(Each process reads only its own rows; with ``bucket_boundaries`` or an unfixed
seq2seq target length it also reads the lengths of the others' rows, since the padded
width is the global batch's.)

Batch counts. ``n // batch_size`` global batches per epoch with ``drop_remainder=True``
(the same on every process, so multi-process steps stay in lockstep); ``ceil(n /
batch_size)`` with ``drop_remainder=False``, where the missing rows of the last global
batch are *filler*: copies of its first example with ``example_weight`` 0 (and
``weights`` 0), so shapes never change, metrics weighted by ``example_weight`` stay
exact, and no row is all padding (which could make a masked mean divide by zero).

Padding. Inputs are padded to ``pad_to`` (default ``spec.max_len``), or, with
``bucket_boundaries``, to the smallest boundary that fits the batch's longest example
(``pad_to`` is always the last boundary). Token-id inputs count as long as their last
non-PAD token (examples may arrive pre-padded with PAD=0), or, for the token kind, their
last scored position if that is later. An example longer than ``pad_to``
raises ``DataError`` naming its index: tasks that truncate do so before the pipeline.
Seq2seq targets are padded to ``spec.max_target_len`` (the batch's longest if 0).

State. ``get_state()`` is a JSON-serialisable dict ``{'epoch', 'batch', ...}`` (a position
in the global stream) and ``set_state`` restores it, so a resumed iterator yields exactly
the batches the uninterrupted one would have. The state records the settings and refuses
to restore into an iterator made with different ones; the shard it was saved by is
recorded but not required to match, since the position is global (a run may resume on
another number of processes).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import grain
import numpy as np

from seqjax.data import columns as columns_lib
from seqjax.data.errors import DataError
from seqjax.data.spec import BOS_ID, PAD_ID, TaskSpec


def _check_positive(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'make_iterator: {name}={value!r} must be an integer >= 1')
  return int(value)


def _real_length(x: np.ndarray) -> int:
  """Length up to the last non-PAD token (token ids) or the full length (features)."""
  if x.ndim == 1 and np.issubdtype(x.dtype, np.integer):
    nonpad = np.flatnonzero(x != PAD_ID)
    return int(nonpad[-1]) + 1 if nonpad.size else 0
  return int(x.shape[0])


class BatchIterator(grain.DatasetIterator):
  """Padded batches of a ``grain.MapDataset``; see the module docstring."""

  def __init__(self, dataset: grain.MapDataset, spec: TaskSpec, *, batch_size: int,
               seed: int, shuffle: bool, num_epochs: int | None, drop_remainder: bool,
               pad_to: int | None, bucket_boundaries: Sequence[int] | None,
               shard_index: int, shard_count: int):
    super().__init__()
    self._dataset, self._spec = dataset, spec
    self._batch_size = _check_positive('batch_size', batch_size)
    shard_count = _check_positive('shard_count', shard_count)
    if isinstance(shard_index, bool) or not 0 <= shard_index < shard_count:
      raise ValueError(f'make_iterator: shard_index={shard_index!r} must be in '
                       f'[0, {shard_count})')
    if num_epochs is not None:
      num_epochs = _check_positive('num_epochs', num_epochs)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f'make_iterator: seed={seed!r} must be an integer >= 0')
    self._seed, self._shuffle, self._num_epochs = int(seed), bool(shuffle), num_epochs
    self._drop = bool(drop_remainder)
    self._shard_index, self._shard_count = int(shard_index), shard_count

    pad_to = pad_to if pad_to is not None else (spec.max_len or None)
    if pad_to is not None:
      pad_to = _check_positive('pad_to', pad_to)
    self._pad_to = pad_to
    if bucket_boundaries is not None:
      if pad_to is None:
        raise ValueError('make_iterator: bucket_boundaries need pad_to or spec.max_len')
      bounds = sorted({_check_positive('bucket_boundaries', b) for b in bucket_boundaries})
      self._bounds = [b for b in bounds if b < pad_to] + [pad_to]
    else:
      self._bounds = None

    if self._batch_size % shard_count:
      raise ValueError(f'make_iterator: batch_size={self._batch_size} (the global batch) '
                       f'must be divisible by shard_count={shard_count}')
    self._rows = self._batch_size // shard_count  # this shard's rows of a global batch
    n = len(dataset)
    self._indices = np.arange(n, dtype=np.int64)
    if self._drop:
      self._batches_per_epoch = n // self._batch_size
    else:
      self._batches_per_epoch = math.ceil(n / self._batch_size)
    if self._batches_per_epoch == 0 and num_epochs is None:
      raise ValueError(f'make_iterator: {n} examples make no batch of '
                       f'batch_size={self._batch_size} with drop_remainder=True; lower '
                       f'batch_size or pass drop_remainder=False')
    self._epoch, self._batch = 0, 0
    self._order = None  # permutation of the current epoch (cached)
    self._order_epoch = -1
    # A split held as columns (seqjax.data.columns) is batched by indexing them: the
    # same arrays as the per-example path below, without a Python loop over rows.
    self._columns = columns_lib.columns_of(dataset)
    if self._columns is not None and (spec.kind == 'seq2seq' or
                                      self._global_width_needed()):
      self._columns = None

  # ---------------------------------------------------------------------- ordering

  @property
  def batches_per_epoch(self) -> int:
    return self._batches_per_epoch

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if self._order_epoch != epoch:
      if self._shuffle:
        rng = np.random.default_rng(np.random.SeedSequence([self._seed, epoch]))
        self._order = self._indices[rng.permutation(len(self._indices))]
      else:
        self._order = self._indices
      self._order_epoch = epoch
    return self._order

  # ---------------------------------------------------------------------- batching

  def _length(self, index: int, example: dict[str, np.ndarray]) -> int:
    length = _real_length(example['inputs'])
    if self._spec.kind == 'token':
      # A scored position is real even if its input is PAD (never cut targets off).
      scored = np.flatnonzero(np.asarray(example['weights']) != 0)
      if scored.size:
        length = max(length, int(scored[-1]) + 1)
    if self._pad_to is not None and length > self._pad_to:
      raise DataError(f'task {self._spec.name!r}: example {index} has {length} input '
                      f'positions, more than the padding length {self._pad_to}; raise '
                      f'max_len/pad_to or let the task truncate')
    return length

  def _width(self, longest: int) -> int:
    if self._bounds is not None:
      return next(b for b in self._bounds if b >= longest)
    return self._pad_to if self._pad_to is not None else max(longest, 1)

  def _global_width_needed(self) -> bool:
    """Whether a shard's padded widths depend on the other shards' rows."""
    return self._shard_count > 1 and (
        self._bounds is not None or self._pad_to is None or
        (self._spec.kind == 'seq2seq' and not self._spec.max_target_len))

  def _collate(self, batch_indices: np.ndarray) -> dict[str, np.ndarray]:
    """This shard's rows of the global batch made of examples ``batch_indices``."""
    if not len(batch_indices):
      raise DataError(f'task {self._spec.name!r}: the dataset is empty')
    bsz, lo = self._rows, self._shard_index * self._rows
    real = [int(i) for i in batch_indices[lo:lo + bsz]]
    num_real = len(real)
    # Filler rows copy the *global* batch's first example, so the global batch is the
    # same array whatever the number of shards.
    indices = real + ([int(batch_indices[0])] if num_real < bsz else [])
    if self._columns is not None:
      return self._gather(indices, num_real)
    examples = [{k: np.asarray(v) for k, v in self._dataset[i].items()} for i in indices]
    lengths = [self._length(i, ex) for i, ex in zip(indices, examples)]
    longest, tgt_longest = max(lengths), None
    if self._global_width_needed():
      mine = set(indices)
      others = [int(i) for i in batch_indices if int(i) not in mine]
      other_examples = [{k: np.asarray(v) for k, v in self._dataset[i].items()}
                        for i in others]
      longest = max([longest] + [self._length(i, ex)
                                 for i, ex in zip(others, other_examples)])
      if self._spec.kind == 'seq2seq':
        tgt_longest = max(_real_length(ex['targets']) for ex in examples + other_examples)
    width = self._width(longest)
    first = examples[0]['inputs']
    batch: dict[str, np.ndarray] = {}
    if first.ndim == 2:
      inputs = np.zeros((bsz, width, first.shape[1]), np.float32)
    else:
      inputs = np.full((bsz, width), PAD_ID, np.int32)
    mask = np.zeros((bsz, width), bool)
    kind = self._spec.kind
    if kind == 'token':
      targets = np.full((bsz, width), PAD_ID, np.int32)
      weights = np.zeros((bsz, width), np.float32)
    elif kind == 'seq2seq':
      tgt_lens = [_real_length(ex['targets']) for ex in examples]  # up to EOS
      tgt_width = self._spec.max_target_len or tgt_longest or max(tgt_lens)
      for i, t in zip(indices, tgt_lens):
        if t > tgt_width:
          raise DataError(f'task {self._spec.name!r}: example {i} has a target of '
                          f'{t} tokens, more than max_target_len={tgt_width}')
      targets = np.full((bsz, tgt_width), PAD_ID, np.int32)
      weights = np.zeros((bsz, tgt_width), np.float32)
    else:
      label = np.zeros((bsz,), np.float32 if kind == 'regression' else np.int32)
    # Filler rows repeat the batch's first example so no row is all padding; their
    # weights stay 0.
    for row in range(bsz):
      src = row if row < num_real else len(indices) - 1
      ex, length = examples[src], lengths[src]
      inputs[row, :length] = ex['inputs'][:length]
      mask[row, :length] = True
      real = 1.0 if row < num_real else 0.0
      if kind == 'token':
        targets[row, :length] = ex['targets'][:length]
        weights[row, :length] = np.asarray(ex['weights'][:length], np.float32) * real
      elif kind == 'seq2seq':
        t = tgt_lens[src]
        targets[row, :t] = ex['targets'][:t]
        weights[row, :t] = real
      else:
        label[row] = ex['label']
    batch['inputs'], batch['mask'] = inputs, mask
    example_weight = np.zeros((bsz,), np.float32)
    example_weight[:num_real] = 1.0
    batch['example_weight'] = example_weight
    if kind in ('token', 'seq2seq'):
      batch['targets'], batch['weights'] = targets, weights
      if kind == 'seq2seq':
        dec = np.full_like(targets, PAD_ID)
        dec[:, 0] = BOS_ID
        dec[:, 1:] = targets[:, :-1]
        batch['decoder_inputs'] = dec
    else:
      batch['label'] = label
    return batch

  def _gather(self, indices: list[int], num_real: int) -> dict[str, np.ndarray]:
    """``_collate`` for a split held as columns (same checks, same arrays)."""
    lengths = self._columns.lengths(self._spec.kind)[indices]
    if self._pad_to is not None and lengths.max() > self._pad_to:
      too_long = indices[int(np.argmax(lengths > self._pad_to))]
      self._length(too_long, self._dataset[too_long])  # raises the DataError
    rows = np.asarray(indices + [indices[-1]] * (self._rows - len(indices)), np.int64)
    row_lengths = self._columns.lengths(self._spec.kind)[rows]
    return columns_lib.gather(self._columns, self._spec.kind, rows, row_lengths,
                              num_real, self._width(int(lengths.max())))

  # ---------------------------------------------------------------------- iteration

  def __next__(self) -> dict[str, np.ndarray]:
    if self._batch >= self._batches_per_epoch:
      self._epoch, self._batch = self._epoch + 1, 0
    if self._num_epochs is not None and self._epoch >= self._num_epochs:
      raise StopIteration
    if self._batches_per_epoch == 0:
      raise StopIteration
    order = self._epoch_order(self._epoch)
    start = self._batch * self._batch_size
    batch = self._collate(order[start:start + self._batch_size])
    self._batch += 1
    return batch

  def _settings(self) -> dict[str, Any]:
    return {'seed': self._seed, 'shuffle': self._shuffle, 'batch_size': self._batch_size,
            'drop_remainder': self._drop, 'num_examples': len(self._dataset)}

  def get_state(self) -> dict[str, Any]:
    # The shard is informative only: the position is global (see the module docstring).
    return {'epoch': self._epoch, 'batch': self._batch, **self._settings(),
            'shard_index': self._shard_index, 'shard_count': self._shard_count}

  def set_state(self, state: dict[str, Any]) -> None:
    mine = self._settings()
    diff = [k for k in mine if k in state and state[k] != mine[k]]
    if diff:
      k = diff[0]
      raise ValueError(f'BatchIterator.set_state: saved {k}={state[k]!r} but this iterator '
                       f'has {k}={mine[k]!r}; rebuild it with the saved settings')
    self._epoch, self._batch = int(state['epoch']), int(state['batch'])


def make_iterator(dataset: grain.MapDataset, spec: TaskSpec, *, batch_size: int,
                  seed: int, shuffle: bool = True, num_epochs: int | None = None,
                  drop_remainder: bool = True, pad_to: int | None = None,
                  bucket_boundaries: Sequence[int] | None = None, shard_index: int = 0,
                  shard_count: int = 1) -> BatchIterator:
  """Batches of ``dataset`` (examples in ``spec``'s format); see the module docstring.

  ``num_epochs=None`` repeats forever.
  """
  return BatchIterator(dataset, spec, batch_size=batch_size, seed=seed, shuffle=shuffle,
                       num_epochs=num_epochs, drop_remainder=drop_remainder, pad_to=pad_to,
                       bucket_boundaries=bucket_boundaries, shard_index=shard_index,
                       shard_count=shard_count)


def make_eval_iterator(dataset: grain.MapDataset, spec: TaskSpec, *, batch_size: int,
                       pad_to: int | None = None,
                       bucket_boundaries: Sequence[int] | None = None,
                       shard_index: int = 0, shard_count: int = 1) -> BatchIterator:
  """One pass in order, last batch filled with ``example_weight`` 0 rows."""
  return make_iterator(dataset, spec, batch_size=batch_size, seed=0, shuffle=False,
                       num_epochs=1, drop_remainder=False, pad_to=pad_to,
                       bucket_boundaries=bucket_boundaries, shard_index=shard_index,
                       shard_count=shard_count)
