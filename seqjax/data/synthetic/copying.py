"""Copying (Arjovsky et al. 2016) and selective copying (Gu & Dao 2023, Mamba sec. 3.1).

Both are ``token`` tasks: ``inputs``/``targets`` int32 ``[time]``, ``weights`` float32
``[time]`` equal to 1 exactly on the output positions (targets are PAD elsewhere).

Ids: 0-3 reserved, 4 = blank (noise), 5 = marker, ``6 .. 6 + num_symbols - 1`` = data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqjax.data.spec import PAD_ID
from seqjax.data.synthetic import base

BLANK_ID = base.FIRST_FREE_ID
MARKER_ID = BLANK_ID + 1
FIRST_DATA_ID = MARKER_ID + 1


def _vocab(num_symbols: int) -> list[str]:
  return [*base.RESERVED, '<blank>', '<marker>', *(f'd{i}' for i in range(num_symbols))]


class SeqjaxCopying(base.SyntheticBuilder):
  """Copy a prefix after a long delay (Arjovsky, Shah & Bengio 2016, "Unitary RNNs").

  ``inputs`` = ``num_tokens`` data symbols, ``delay`` blanks, one marker, ``num_tokens``
  blanks; length ``2 * num_tokens + delay + 1``. The model must emit the data symbols,
  in order, on the final ``num_tokens`` positions (the only scored positions). The
  memoryless baseline is ``1 / num_symbols`` token accuracy.
  """

  TASK = 'copying'
  DEFAULTS = {'num_tokens': 10, 'delay': 10, 'num_symbols': 8}

  @classmethod
  def validate(cls, opts: dict[str, Any]) -> None:
    base.check_int(cls.TASK, opts, 'num_tokens', 1)
    base.check_int(cls.TASK, opts, 'delay', 0)
    base.check_int(cls.TASK, opts, 'num_symbols', 1)

  @classmethod
  def seq_len(cls, opts: dict[str, Any]) -> int:
    return 2 * opts['num_tokens'] + opts['delay'] + 1

  @classmethod
  def make_spec(cls, opts):
    return base.token_spec(cls.TASK, FIRST_DATA_ID + opts['num_symbols'], cls.seq_len(opts))

  @classmethod
  def vocab(cls, opts):
    return {'vocab': _vocab(opts['num_symbols'])}

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    k, delay = self.opts['num_tokens'], self.opts['delay']
    length = self.seq_len(self.opts)
    data = (FIRST_DATA_ID + rng.integers(0, self.opts['num_symbols'], (n, k))).astype(np.int32)
    inputs = np.full((n, length), BLANK_ID, np.int32)
    inputs[:, :k] = data
    inputs[:, k + delay] = MARKER_ID
    targets = np.full((n, length), PAD_ID, np.int32)
    targets[:, -k:] = data
    weights = np.zeros((n, length), np.float32)
    weights[:, -k:] = 1.0
    return {'inputs': inputs, 'targets': targets, 'weights': weights}


class SeqjaxSelectiveCopying(base.SyntheticBuilder):
  """Selective copying (Gu & Dao 2023, "Mamba", sec. 3.1 and fig. 2).

  ``inputs`` = a context of ``seq_len`` positions holding ``num_tokens`` data symbols at
  random positions among blanks (noise), then ``num_tokens`` markers; length
  ``seq_len + num_tokens``. At the markers the model must emit the data symbols in their
  order of appearance: content-aware selection, which a time-invariant (LTI) model cannot
  do with a fixed spacing as in plain copying.
  """

  TASK = 'selective_copying'
  DEFAULTS = {'seq_len': 64, 'num_tokens': 8, 'num_symbols': 8}

  @classmethod
  def validate(cls, opts: dict[str, Any]) -> None:
    seq_len = base.check_int(cls.TASK, opts, 'seq_len', 1)
    base.check_int(cls.TASK, opts, 'num_tokens', 1)
    base.check_int(cls.TASK, opts, 'num_symbols', 1)
    if opts['num_tokens'] > seq_len:
      raise ValueError(f'task {cls.TASK!r}: option num_tokens={opts["num_tokens"]} must be '
                       f'<= seq_len={seq_len}')

  @classmethod
  def make_spec(cls, opts):
    return base.token_spec(cls.TASK, FIRST_DATA_ID + opts['num_symbols'],
                           opts['seq_len'] + opts['num_tokens'])

  @classmethod
  def vocab(cls, opts):
    return {'vocab': _vocab(opts['num_symbols'])}

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    seq_len, k = self.opts['seq_len'], self.opts['num_tokens']
    data = (FIRST_DATA_ID + rng.integers(0, self.opts['num_symbols'], (n, k))).astype(np.int32)
    # Sorted random positions: the i-th data symbol in reading order is data[:, i].
    positions = np.sort(base.random_subsets(rng, n, seq_len, k), axis=1)
    context = np.full((n, seq_len), BLANK_ID, np.int32)
    np.put_along_axis(context, positions, data, axis=1)
    inputs = np.concatenate([context, np.full((n, k), MARKER_ID, np.int32)], axis=1)
    targets = np.full_like(inputs, PAD_ID)
    targets[:, seq_len:] = data
    weights = np.zeros(inputs.shape, np.float32)
    weights[:, seq_len:] = 1.0
    return {'inputs': inputs, 'targets': targets, 'weights': weights}
