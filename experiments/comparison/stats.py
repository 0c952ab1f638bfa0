"""Spread over seeds and the rule that decides when two families differ.

A comparison cell trains every family with several seeds. The report gives each cell's
mean and its min-max range over seeds, and calls family A better than family B only when
the two ranges do not overlap (every seed of A beats every seed of B); otherwise the two
are "not separable at N seeds". With three seeds, disjoint ranges happen by chance with
probability 2 / C(6, 3) = 0.1 when both families come from the same distribution (any of
the 20 orderings of six values is equally likely, and two of them are disjoint): a
conservative rule for a table, not a significance test.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def spread(values: Sequence[float]) -> dict[str, float]:
  """``{'mean', 'min', 'max', 'n'}`` of the finite ``values`` (NaN mean when none)."""
  finite = [float(v) for v in values if v is not None and math.isfinite(v)]
  if not finite:
    return {'mean': math.nan, 'min': math.nan, 'max': math.nan, 'n': 0}
  return {'mean': float(np.mean(finite)), 'min': min(finite), 'max': max(finite),
          'n': len(finite)}


def format_spread(values: Sequence[float], fmt: str = '.3f') -> str:
  """``'0.912 [0.880-0.950]'``: mean and min-max range; one value alone when n = 1."""
  s = spread(values)
  if s['n'] == 0:
    return 'n/a'
  if s['n'] == 1 or s['min'] == s['max']:
    return format(s['mean'], fmt)
  return f'{s["mean"]:{fmt}} [{s["min"]:{fmt}}-{s["max"]:{fmt}}]'


def separated(a: Sequence[float], b: Sequence[float]) -> int:
  """+1 when every value of ``a`` exceeds every value of ``b``, -1 for the reverse, 0 when
  the ranges overlap (or either side has no finite value). Larger is better."""
  sa, sb = spread(a), spread(b)
  if not sa['n'] or not sb['n']:
    return 0
  if sa['min'] > sb['max']:
    return 1
  if sb['min'] > sa['max']:
    return -1
  return 0


def chance_probability_disjoint(n_a: int, n_b: int) -> float:
  """Probability that ``n_a`` and ``n_b`` exchangeable values (no real difference) land in
  disjoint ranges, in either order: ``2 / C(n_a + n_b, n_a)``."""
  return 2.0 / math.comb(n_a + n_b, n_a)
