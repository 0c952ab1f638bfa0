"""Marker order: a classification task in which token order is the only signal.

``classification`` task with ``num_markers`` classes: ``inputs`` int32 ``[seq_len]`` holds
every one of ``num_markers`` distinct marker tokens exactly once, at distinct uniformly
random positions, among filler tokens drawn uniformly from ``num_symbols`` symbols;
``label`` int32 ``[]`` is the index of the marker that appears first.

Why order is the only signal: the markers are always the same set (one of each), the
fillers are drawn independently of where the markers go, and the order in which the
markers appear is a uniformly random permutation independent of both. So the multiset
of tokens of an example is independent of its label, and any model that only sees the
multiset (e.g. a bidirectional Transformer encoder without positional encodings,
Vaswani et al. 2017 sec. 3.5, which is permutation-equivariant) is at chance,
``1 / num_markers``. Reading the tokens in order solves it exactly.

Ids: 0-3 reserved, markers ``4 .. 4 + num_markers - 1`` (``m0``, ``m1``, ...), then the
fillers ``f0 .. f{num_symbols - 1}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.spec import TaskSpec
from seqjax.data.synthetic import base

FIRST_MARKER_ID = base.FIRST_FREE_ID


class SeqjaxMarkerOrder(base.SyntheticBuilder):
  """Which marker comes first? Order-only classification (chance = 1 / num_markers)."""

  TASK = 'marker_order'
  DEFAULTS = {'seq_len': 16, 'num_markers': 2, 'num_symbols': 8}

  @classmethod
  def validate(cls, opts: dict[str, Any]) -> None:
    seq_len = base.check_int(cls.TASK, opts, 'seq_len', 2)
    markers = base.check_int(cls.TASK, opts, 'num_markers', 2)
    base.check_int(cls.TASK, opts, 'num_symbols', 1)
    if markers > seq_len:
      raise ValueError(f'task {cls.TASK!r}: option num_markers={markers} must be <= '
                       f'seq_len={seq_len} (every marker needs its own position)')

  @classmethod
  def make_spec(cls, opts):
    return TaskSpec(name=cls.TASK, kind='classification',
                    vocab_size=FIRST_MARKER_ID + opts['num_markers'] + opts['num_symbols'],
                    num_classes=opts['num_markers'], max_len=opts['seq_len'],
                    metrics=('accuracy',), eval_metric='accuracy',
                    eval_metric_larger_is_better=True, order_sensitive=True)

  @classmethod
  def vocab(cls, opts):
    return {'vocab': [*base.RESERVED, *(f'm{i}' for i in range(opts['num_markers'])),
                      *(f'f{i}' for i in range(opts['num_symbols']))]}

  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        'inputs': tfds.features.Tensor(shape=(self.opts['seq_len'],), dtype=np.int32),
        'label': tfds.features.Tensor(shape=(), dtype=np.int32),
    })

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    length, markers = self.opts['seq_len'], self.opts['num_markers']
    first_filler = FIRST_MARKER_ID + markers
    inputs = first_filler + rng.integers(0, self.opts['num_symbols'], (n, length))
    inputs = inputs.astype(np.int32)
    # Column j = the position of marker j: distinct, each uniform over the sequence.
    positions = base.random_subsets(rng, n, length, markers)
    marker_ids = np.broadcast_to(FIRST_MARKER_ID + np.arange(markers, dtype=np.int32),
                                 (n, markers))
    np.put_along_axis(inputs, positions, marker_ids, axis=1)
    label = np.argmin(positions, axis=1).astype(np.int32)
    return {'inputs': inputs, 'label': label}
