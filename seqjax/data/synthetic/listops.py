"""ListOps (Nangia & Bowman 2018; the long-range version of Tay et al. 2021, "LRA").

``classification`` task with 10 classes: ``inputs`` int32 ``[time]`` (``time <= max_len``)
is a tokenised nested expression such as ``[ MAX 2 9 [ MIN 4 7 ] 0 ]`` and ``label`` int32
``[]`` its value. Operators over digits 0-9:

* ``MAX`` / ``MIN``: largest / smallest argument;
* ``MED``: median, rounded down for an even count (as ``int(np.median(...))`` in LRA);
* ``SM``: sum modulo 10.

Ids: 0-3 reserved, digits ``0..9`` -> ``4..13``, ``[`` -> 14, ``]`` -> 15, ``MAX`` 16,
``MIN`` 17, ``MED`` 18, ``SM`` 19 (``'['`` and the operator are separate tokens).

Generation follows LRA's recursive sampler: the root is an operator with 2 to
``max_args`` arguments; each argument is itself an operator with probability ``op_prob``
(while deeper than ``max_depth`` is impossible) and a digit otherwise. Expressions whose
token count falls outside ``[min_len, max_len]`` are redrawn.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.spec import TaskSpec
from seqjax.data.synthetic import base

DIGIT_IDS = tuple(range(base.FIRST_FREE_ID, base.FIRST_FREE_ID + 10))
OPEN_ID = DIGIT_IDS[-1] + 1
CLOSE_ID = OPEN_ID + 1
OPERATORS = ('MAX', 'MIN', 'MED', 'SM')
OPERATOR_IDS = {name: CLOSE_ID + 1 + i for i, name in enumerate(OPERATORS)}
VOCAB = (*base.RESERVED, *(str(d) for d in range(10)), '[', ']', *OPERATORS)
_MAX_ATTEMPTS = 10000  # redraws per example before the length bounds are declared unmeetable


def apply_operator(name: str, args: Sequence[int]) -> int:
  """Value of one ListOps operator over its digit arguments."""
  if name == 'MAX':
    return max(args)
  if name == 'MIN':
    return min(args)
  if name == 'MED':
    ordered = sorted(args)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
  return sum(args) % 10


def evaluate(tokens: Sequence[int]) -> int:
  """Value of a tokenised expression (ids as above), by a single left-to-right pass.

  A stack of open frames ``[operator, args...]``; ``]`` reduces the top frame into its
  parent's argument list.
  """
  names = {i: name for name, i in OPERATOR_IDS.items()}
  stack: list[list[Any]] = []
  result = None
  for tok in map(int, tokens):
    if tok == OPEN_ID:
      stack.append([])
    elif tok in names:
      stack[-1].append(names[tok])
    elif tok == CLOSE_ID:
      frame = stack.pop()
      value = apply_operator(frame[0], frame[1:])
      if stack:
        stack[-1].append(value)
      else:
        result = value
    else:
      stack[-1].append(tok - DIGIT_IDS[0])
  if result is None or stack:
    raise ValueError('ListOps expression is not a single closed [ ... ] expression')
  return result


class _TooLong(Exception):
  pass


def _sample(r: random.Random, depth: int, opts: dict[str, Any], out: list[int]) -> None:
  """Appends one operator expression at ``depth`` (root = 1) to ``out``."""
  out.append(OPEN_ID)
  out.append(OPERATOR_IDS[OPERATORS[int(r.random() * len(OPERATORS))]])
  for _ in range(2 + int(r.random() * (opts['max_args'] - 1))):  # 2 .. max_args
    if depth < opts['max_depth'] and r.random() < opts['op_prob']:
      _sample(r, depth + 1, opts, out)
    else:
      out.append(DIGIT_IDS[int(r.random() * 10)])
    if len(out) >= opts['max_len']:  # stop early: the closing ']' would not fit anyway
      raise _TooLong
  out.append(CLOSE_ID)


class SeqjaxListops(base.SyntheticBuilder):
  """Evaluate nested MAX/MIN/MED/SM expressions over digits (Nangia & Bowman 2018)."""

  TASK = 'listops'
  DEFAULTS = {'max_depth': 4, 'max_args': 5, 'max_len': 128, 'min_len': 1,
              'op_prob': 0.25}

  @classmethod
  def validate(cls, opts):
    base.check_int(cls.TASK, opts, 'max_depth', 1)
    base.check_int(cls.TASK, opts, 'max_args', 2)
    # The shortest expression, "[ OP d d ]", has 5 tokens.
    max_len = base.check_int(cls.TASK, opts, 'max_len', 5)
    min_len = base.check_int(cls.TASK, opts, 'min_len', 1)
    base.check_float(cls.TASK, opts, 'op_prob', 0.0, 1.0)
    if min_len > max_len:
      raise ValueError(f'task {cls.TASK!r}: option min_len={min_len} must be <= '
                       f'max_len={max_len}')

  @classmethod
  def make_spec(cls, opts):
    return TaskSpec(name=cls.TASK, kind='classification', vocab_size=len(VOCAB),
                    num_classes=10, max_len=opts['max_len'], metrics=('accuracy',),
                    eval_metric='accuracy', eval_metric_larger_is_better=True,
                    order_sensitive=True)

  @classmethod
  def vocab(cls, opts):
    return {'vocab': list(VOCAB)}

  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        'inputs': tfds.features.Tensor(shape=(None,), dtype=np.int32),
        'label': tfds.features.Tensor(shape=(), dtype=np.int32),
    })

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, Any]:
    # A recursive sampler draws many scalars: Python's Mersenne Twister (seeded from the
    # NumPy stream, so still deterministic per seed and split) is ~20x cheaper per draw.
    r = random.Random(int(rng.integers(0, 2**63)))
    inputs, labels = [], []
    for _ in range(n):
      for _ in range(_MAX_ATTEMPTS):
        tokens: list[int] = []
        try:
          _sample(r, 1, self.opts, tokens)
        except _TooLong:
          continue
        if len(tokens) >= self.opts['min_len']:
          break
      else:
        raise ValueError(
            f'task {self.TASK!r}: no expression of length in [{self.opts["min_len"]}, '
            f'{self.opts["max_len"]}] after {_MAX_ATTEMPTS} draws; widen the bounds or '
            f'change max_depth / max_args / op_prob')
      inputs.append(np.asarray(tokens, np.int32))
      labels.append(np.int32(evaluate(tokens)))
    return {'inputs': inputs, 'label': np.asarray(labels, np.int32)}
