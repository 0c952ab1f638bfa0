"""In-context recall: associative recall, multi-query AR (Zoology) and induction heads.

All are ``token`` tasks: ``inputs``/``targets`` int32 ``[time]``, ``weights`` float32
``[time]`` equal to 1 exactly at the query positions (targets are PAD elsewhere).

Recall ids: 0-3 reserved, 4 = blank (fills MQAR's query region; unused by single-query AR),
keys ``5 .. 5 + num_keys - 1``, then values (``num_values`` ids): keys and values never
share an id, as in Zoology's key/value vocabulary halves.
Induction ids: 0-3 reserved, 4 = trigger, ``5 .. 5 + num_symbols - 1`` = ordinary symbols.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqjax.data.spec import PAD_ID
from seqjax.data.synthetic import base

BLANK_ID = base.FIRST_FREE_ID
FIRST_KEY_ID = BLANK_ID + 1
TRIGGER_ID = base.FIRST_FREE_ID


def _recall_vocab(opts: dict[str, Any]) -> dict[str, Any]:
  keys = [f'k{i}' for i in range(opts['num_keys'])]
  values = [f'v{i}' for i in range(opts['num_values'])]
  return {'vocab': [*base.RESERVED, '<blank>', *keys, *values]}


def _recall_examples(rng: np.random.Generator, n: int, opts: dict[str, Any],
                     query_len: int, num_queries: int) -> dict[str, np.ndarray]:
  """``[n, 2 * num_pairs + query_len]`` examples: k1 v1 ... kP vP, then the query region.

  The region holds ``num_queries`` distinct keys of the context (random order) at sorted
  random positions, blanks elsewhere; the target at a query is the value bound to its key.
  """
  pairs = opts['num_pairs']
  first_value_id = FIRST_KEY_ID + opts['num_keys']
  keys = (FIRST_KEY_ID + base.random_subsets(rng, n, opts['num_keys'], pairs)).astype(np.int32)
  values = (first_value_id + rng.integers(0, opts['num_values'], (n, pairs))).astype(np.int32)
  context = np.empty((n, 2 * pairs), np.int32)
  context[:, 0::2], context[:, 1::2] = keys, values
  asked = base.random_subsets(rng, n, pairs, num_queries)  # which pairs, in query order
  positions = np.sort(base.random_subsets(rng, n, query_len, num_queries), axis=1)
  region = np.full((n, query_len), BLANK_ID, np.int32)
  region_targets = np.full((n, query_len), PAD_ID, np.int32)
  np.put_along_axis(region, positions, np.take_along_axis(keys, asked, axis=1), axis=1)
  np.put_along_axis(region_targets, positions, np.take_along_axis(values, asked, axis=1),
                    axis=1)
  inputs = np.concatenate([context, region], axis=1)
  targets = np.concatenate([np.full_like(context, PAD_ID), region_targets], axis=1)
  weights = np.zeros(inputs.shape, np.float32)
  weights[:, 2 * pairs:] = region != BLANK_ID
  return {'inputs': inputs, 'targets': targets, 'weights': weights}


def _validate_pairs(task: str, opts: dict[str, Any]) -> None:
  pairs = base.check_int(task, opts, 'num_pairs', 1)
  num_keys = base.check_int(task, opts, 'num_keys', 1)
  base.check_int(task, opts, 'num_values', 1)
  if pairs > num_keys:
    raise ValueError(f'task {task!r}: option num_pairs={pairs} must be <= '
                     f'num_keys={num_keys} (keys in one sequence are distinct)')


class SeqjaxAssociativeRecall(base.SyntheticBuilder):
  """Associative recall (Ba et al. 2016; Fu et al. 2023 "H3"): one query at the end.

  ``inputs`` = ``k1 v1 k2 v2 ... kP vP q`` (``P = num_pairs`` distinct keys, length
  ``2P + 1``); the only scored position is the last, whose target is the value bound to
  ``q``. Chance is ``1 / num_values``.
  """

  TASK = 'associative_recall'
  DEFAULTS = {'num_pairs': 8, 'num_keys': 16, 'num_values': 16}

  @classmethod
  def validate(cls, opts):
    _validate_pairs(cls.TASK, opts)

  @classmethod
  def make_spec(cls, opts):
    return base.token_spec(cls.TASK, FIRST_KEY_ID + opts['num_keys'] + opts['num_values'],
                           2 * opts['num_pairs'] + 1)

  @classmethod
  def vocab(cls, opts):
    return _recall_vocab(opts)

  def generate(self, rng, n):
    return _recall_examples(rng, n, self.opts, query_len=1, num_queries=1)


class SeqjaxMqar(base.SyntheticBuilder):
  """Multi-query associative recall (Arora et al. 2023, "Zoology", sec. 3).

  ``inputs`` = ``num_pairs`` key-value pairs, then a region of ``seq_len - 2 * num_pairs``
  positions holding ``num_queries`` of those keys (distinct, shuffled) at uniformly random
  positions among blanks; length ``seq_len``. Every query is scored: its target is the
  value bound to that key. (Zoology draws query gaps from a power law and fills gaps with
  random tokens; blanks and uniform positions keep the scored positions unambiguous.)
  """

  TASK = 'mqar'
  DEFAULTS = {'seq_len': 64, 'num_pairs': 8, 'num_queries': 8, 'num_keys': 32,
              'num_values': 32}

  @classmethod
  def validate(cls, opts):
    _validate_pairs(cls.TASK, opts)
    seq_len = base.check_int(cls.TASK, opts, 'seq_len', 3)
    queries = base.check_int(cls.TASK, opts, 'num_queries', 1)
    pairs = opts['num_pairs']
    if queries > pairs:
      raise ValueError(f'task {cls.TASK!r}: option num_queries={queries} must be <= '
                       f'num_pairs={pairs}')
    if 2 * pairs + queries > seq_len:
      raise ValueError(f'task {cls.TASK!r}: option seq_len={seq_len} must be >= '
                       f'2 * num_pairs + num_queries = {2 * pairs + queries}')

  @classmethod
  def make_spec(cls, opts):
    return base.token_spec(cls.TASK, FIRST_KEY_ID + opts['num_keys'] + opts['num_values'],
                           opts['seq_len'])

  @classmethod
  def vocab(cls, opts):
    return _recall_vocab(opts)

  def generate(self, rng, n):
    return _recall_examples(rng, n, self.opts,
                            query_len=self.opts['seq_len'] - 2 * self.opts['num_pairs'],
                            num_queries=self.opts['num_queries'])


class SeqjaxInductionHeads(base.SyntheticBuilder):
  """Induction heads (Olsson et al. 2022; task form of Fu et al. 2023 "H3").

  ``inputs`` = ``seq_len`` random symbols in which the trigger ``A`` (id 4) appears
  exactly twice: once at a random position ``p <= seq_len - 3`` followed by ``B``, and
  again at the last position. The target at the last position (the only scored one) is
  ``B``: "after A came B before, so B comes next".
  """

  TASK = 'induction_heads'
  DEFAULTS = {'seq_len': 32, 'num_symbols': 16}

  @classmethod
  def validate(cls, opts):
    base.check_int(cls.TASK, opts, 'seq_len', 3)
    base.check_int(cls.TASK, opts, 'num_symbols', 1)

  @classmethod
  def make_spec(cls, opts):
    return base.token_spec(cls.TASK, TRIGGER_ID + 1 + opts['num_symbols'], opts['seq_len'])

  @classmethod
  def vocab(cls, opts):
    return {'vocab': [*base.RESERVED, '<trigger>',
                      *(f's{i}' for i in range(opts['num_symbols']))]}

  def generate(self, rng, n):
    length = self.opts['seq_len']
    inputs = (TRIGGER_ID + 1 + rng.integers(0, self.opts['num_symbols'], (n, length)))
    inputs = inputs.astype(np.int32)
    rows = np.arange(n)
    trigger_at = rng.integers(0, length - 2, n)  # leaves room for B before the final A
    inputs[rows, trigger_at] = TRIGGER_ID
    inputs[:, -1] = TRIGGER_ID
    targets = np.full_like(inputs, PAD_ID)
    targets[:, -1] = inputs[rows, trigger_at + 1]
    weights = np.zeros(inputs.shape, np.float32)
    weights[:, -1] = 1.0
    return {'inputs': inputs, 'targets': targets, 'weights': weights}
