"""The adding problem (Hochreiter & Schmidhuber 1997; formulation of Le et al. 2015).

``regression`` task: ``inputs`` float32 ``[seq_len, 2]`` of (value, marker) pairs with
values in U[0, 1) and exactly two markers equal to 1 — one in the first half
``[0, seq_len // 2)``, one in the second half ``[seq_len // 2, seq_len)``;
``label`` float32 ``[]`` = the sum of the two marked values. Predicting the mean (1.0)
gives MSE 1/6 ~ 0.167, the baseline a model must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.spec import TaskSpec
from seqjax.data.synthetic import base


class SeqjaxAdding(base.SyntheticBuilder):
  """Add the two marked numbers of a long sequence (Hochreiter & Schmidhuber 1997)."""

  TASK = 'adding'
  DEFAULTS = {'seq_len': 50}

  @classmethod
  def validate(cls, opts: dict[str, Any]) -> None:
    base.check_int(cls.TASK, opts, 'seq_len', 2)

  @classmethod
  def make_spec(cls, opts):
    # The answer only depends on which values carry a marker, not on where the pairs sit.
    return TaskSpec(name=cls.TASK, kind='regression', vocab_size=0, input_features=2,
                    num_classes=1, max_len=opts['seq_len'], metrics=('mse', 'within_0.04'),
                    eval_metric='mse', eval_metric_larger_is_better=False,
                    order_sensitive=False)

  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        'inputs': tfds.features.Tensor(shape=(self.opts['seq_len'], 2), dtype=np.float32),
        'label': tfds.features.Tensor(shape=(), dtype=np.float32),
    })

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    length = self.opts['seq_len']
    half = length // 2
    values = rng.random((n, length), dtype=np.float32)
    rows = np.arange(n)
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length), np.float32)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    label = (values[rows, first] + values[rows, second]).astype(np.float32)
    return {'inputs': np.stack([values, markers], axis=-1), 'label': label}
