"""Toy translation: character-level date normalisation, or reversal (``variant='reverse'``).

``seq2seq`` task: ``inputs`` int32 ``[src_time]`` source characters, ``targets`` int32
``[tgt_time]`` target characters ending with EOS (id 3). Source and target vocabularies are
distinct and stored in the task metadata (``source_vocab`` / ``target_vocab``, index = id,
ids 0-3 reserved) so predictions can be decoded.

* ``variant='date'`` (default): a date written in one of six human formats
  (``'23 nov 2026'``, ``'nov 23, 2026'``, ``'23 november 2026'``, ``'november 23, 2026'``,
  ``'23.11.2026'``, ``'mon 23 nov 2026'``) -> ISO 8601 ``'2026-11-23'``. Dates are uniform
  over ``[min_year-01-01, max_year-12-31]``; names are English and lower case, independent
  of the locale.
* ``variant='reverse'``: a random lower-case string of length 1..``seq_len`` over the first
  ``num_symbols`` letters -> the same string reversed, in upper case.
"""

from __future__ import annotations

import datetime
import string
from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.spec import EOS_ID, TaskSpec
from seqjax.data.synthetic import base

MONTHS = ('january', 'february', 'march', 'april', 'may', 'june', 'july', 'august',
          'september', 'october', 'november', 'december')
WEEKDAYS = ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')  # date.weekday() order

DATE_FORMATS: tuple[Callable[[datetime.date], str], ...] = (
    lambda d: f'{d.day} {MONTHS[d.month - 1][:3]} {d.year:04d}',
    lambda d: f'{MONTHS[d.month - 1][:3]} {d.day}, {d.year:04d}',
    lambda d: f'{d.day} {MONTHS[d.month - 1]} {d.year:04d}',
    lambda d: f'{MONTHS[d.month - 1]} {d.day}, {d.year:04d}',
    lambda d: f'{d.day:02d}.{d.month:02d}.{d.year:04d}',
    lambda d: f'{WEEKDAYS[d.weekday()]} {d.day} {MONTHS[d.month - 1][:3]} {d.year:04d}',
)
DATE_SOURCE_CHARS = ' ,.' + string.digits + ''.join(sorted(set(''.join(MONTHS + WEEKDAYS))))
DATE_TARGET_CHARS = '-' + string.digits
ISO_LEN = len('2026-11-23')


def _iso(d: datetime.date) -> str:
  return f'{d.year:04d}-{d.month:02d}-{d.day:02d}'


def _max_date_source_len() -> int:
  # Years are always 4 digits, so one leap year covers every month/day/weekday width.
  start = datetime.date(2024, 1, 1).toordinal()
  return max(len(fmt(datetime.date.fromordinal(o)))
             for o in range(start, start + 366) for fmt in DATE_FORMATS)


def _chars(opts: dict[str, Any]) -> tuple[str, str]:
  """(source characters, target characters) in id order after the reserved ids."""
  if opts['variant'] == 'date':
    return DATE_SOURCE_CHARS, DATE_TARGET_CHARS
  letters = string.ascii_lowercase[:opts['num_symbols']]
  return letters, letters.upper()


def _encode(text: str, chars: str) -> np.ndarray:
  table = {c: base.FIRST_FREE_ID + i for i, c in enumerate(chars)}
  return np.asarray([table[c] for c in text], np.int32)


class SeqjaxToyTranslation(base.SyntheticBuilder):
  """Character-level date normalisation ("23 nov 2026" -> "2026-11-23") or reversal."""

  TASK = 'toy_translation'
  VARIANTS = ('date', 'reverse')
  # Which options each variant reads; the others must stay at their defaults.
  VARIANT_OPTIONS = {'date': ('min_year', 'max_year'), 'reverse': ('seq_len', 'num_symbols')}
  DEFAULTS = {'variant': 'date', 'min_year': 1950, 'max_year': 2049, 'seq_len': 16,
              'num_symbols': 10}

  @classmethod
  def validate(cls, opts):
    variant = base.check_choice(cls.TASK, opts, 'variant', cls.VARIANTS)
    for other, names in cls.VARIANT_OPTIONS.items():
      for name in names:
        if other != variant and opts[name] != cls.DEFAULTS[name]:
          raise ValueError(f'task {cls.TASK!r}: option {name!r} only applies to '
                           f'variant={other!r} (got variant={variant!r})')
    if variant == 'date':
      low = base.check_int(cls.TASK, opts, 'min_year', 1, 9999)
      high = base.check_int(cls.TASK, opts, 'max_year', 1, 9999)
      if low > high:
        raise ValueError(f'task {cls.TASK!r}: option min_year={low} must be <= '
                         f'max_year={high}')
    else:
      base.check_int(cls.TASK, opts, 'seq_len', 1)
      base.check_int(cls.TASK, opts, 'num_symbols', 1, 26)

  @classmethod
  def make_spec(cls, opts):
    source, target = _chars(opts)
    if opts['variant'] == 'date':
      max_len, max_target_len = _max_date_source_len(), ISO_LEN + 1
    else:
      max_len, max_target_len = opts['seq_len'], opts['seq_len'] + 1
    return TaskSpec(name=cls.TASK, kind='seq2seq',
                    vocab_size=base.FIRST_FREE_ID + len(source),
                    tgt_vocab_size=base.FIRST_FREE_ID + len(target), max_len=max_len,
                    max_target_len=max_target_len,
                    metrics=base.TOKEN_METRICS, eval_metric='sequence_accuracy',
                    eval_metric_larger_is_better=True, order_sensitive=True)

  @classmethod
  def vocab(cls, opts):
    source, target = _chars(opts)
    return {'source_vocab': [*base.RESERVED, *source],
            'target_vocab': [*base.RESERVED, *target]}

  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        'inputs': tfds.features.Tensor(shape=(None,), dtype=np.int32),
        'targets': tfds.features.Tensor(shape=(None,), dtype=np.int32),
    })

  def generate(self, rng: np.random.Generator, n: int) -> dict[str, Any]:
    source_chars, target_chars = _chars(self.opts)
    if self.opts['variant'] == 'date':
      first = datetime.date(self.opts['min_year'], 1, 1).toordinal()
      last = datetime.date(self.opts['max_year'], 12, 31).toordinal()
      days = rng.integers(first, last + 1, n)
      formats = rng.integers(0, len(DATE_FORMATS), n)
      pairs = []
      for day, fmt in zip(days.tolist(), formats.tolist()):
        date = datetime.date.fromordinal(day)
        pairs.append((DATE_FORMATS[fmt](date), _iso(date)))
    else:
      lengths = rng.integers(1, self.opts['seq_len'] + 1, n)
      letters = rng.integers(0, self.opts['num_symbols'], (n, self.opts['seq_len']))
      pairs = []
      for length, row in zip(lengths.tolist(), letters):
        text = ''.join(source_chars[i] for i in row[:length])
        pairs.append((text, text[::-1].upper()))
    inputs = [_encode(src, source_chars) for src, _ in pairs]
    targets = [np.append(_encode(tgt, target_chars), np.int32(EOS_ID)) for _, tgt in pairs]
    return {'inputs': inputs, 'targets': targets}
