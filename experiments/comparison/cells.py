"""Reading trained cells: their status, a pairwise verdict, and where a family breaks.

A cell record comes from ``training.train_cell``: per seed, the test score of the learning
rate chosen on validation and the steps it took to reach the criterion (None = not
reached). Three claims must not be confused:

* "A learned the task in K steps" (every seed reached the criterion);
* "A did not learn it within B steps" (no seed did: a statement about this budget);
* "A scored higher than B" (seed ranges do not overlap, ``stats.separated``).

``compare(a, b)`` turns two cells into one of those claims, or "not separable". A cell
whose programs did not fit in the device's memory (status ``'out of memory'``, no scores)
is none of them: it is "not measured", and no rule counts it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from experiments.comparison import stats
from experiments.comparison.measure import OUT_OF_MEMORY
from experiments.comparison.scoring import CHANCE_MARGIN

PREVIEW = 'preview: not converged at this budget (see `--suite=standard`)'
NOT_MEASURED = f'not measured: {OUT_OF_MEMORY}'


def out_of_memory(record: dict[str, Any]) -> bool:
  """Whether the cell did not fit in the device's memory (nothing was measured)."""
  return record.get('status') == OUT_OF_MEMORY


def measured(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The cells of ``records`` that were trained (not out of memory)."""
  return [r for r in records if not out_of_memory(r)]


def status(record: dict[str, Any]) -> str:
  """``'learned'`` (every seed reached the criterion), ``'learned by k/n seeds'``,
  ``'not learned within B steps'``, ``'no criterion'`` or ``'out of memory'``."""
  if out_of_memory(record):
    return OUT_OF_MEMORY
  if record['criterion'].startswith('none'):
    return 'no criterion'
  n, k = len(record['steps_to_criterion']), record['reached']
  if k == n:
    return 'learned'
  if k:
    return f'learned by {k}/{n} seeds'
  return f'not learned within {record["budget"]} steps'


def learned(record: dict[str, Any]) -> bool:
  return record['reached'] == len(record['steps_to_criterion']) > 0


def chance_margin(record: dict[str, Any]) -> float:
  """How far above chance a score may sit and still be chance: three binomial standard
  errors over the test examples (conservative for tasks that score several tokens per
  example), at least 0.02; ``CHANCE_MARGIN`` for scores that are not accuracies."""
  chance, n = record['chance'], record.get('test_examples', 0)
  if 0 < chance < 1 and n:
    return max(0.02, 3 * math.sqrt(chance * (1 - chance) / n))
  return CHANCE_MARGIN


def at_chance(record: dict[str, Any]) -> bool:
  """Every seed's score within ``chance_margin`` of the task's chance level."""
  return stats.spread(record['scores'])['max'] <= record['chance'] + chance_margin(record)


def steps_text(record: dict[str, Any]) -> str:
  if out_of_memory(record):
    return OUT_OF_MEMORY
  steps = [s for s in record['steps_to_criterion'] if s is not None]
  if not steps:
    return f'not within {record["budget"]}'
  text = stats.format_spread(steps, '.0f')
  n = len(record['steps_to_criterion'])
  return text if len(steps) == n else f'{text} ({len(steps)}/{n} seeds)'


@dataclasses.dataclass(frozen=True)
class Outcome:
  winner: str | None      # the family that is better, None for a tie / not separable
  text: str               # one clause saying why
  preview: bool = False   # the budget was too small to say (quick suite)
  measured: bool = True   # False: a cell did not fit in memory, nothing to compare


def compare(a: dict[str, Any], b: dict[str, Any], preview_rule: bool = False) -> Outcome:
  """Which of two cells (same task setting, different families) did better, if either.

  Both learned: a tie on ability (the text says which learned faster, if their steps to
  the criterion separate). Both at chance: a tie ("neither learned"). Otherwise the
  family whose test scores all exceed the other's wins; overlapping ranges are "not
  separable". ``preview_rule`` (quick suite): when either cell has a seed that did not
  reach its criterion, no winner is declared and the outcome says "preview".
  """
  fa, fb = a['family'], b['family']
  missing = [r['family'] for r in (a, b) if out_of_memory(r)]
  if missing:
    return Outcome(None, f'{NOT_MEASURED} ({", ".join(missing)})', measured=False)
  la, lb = learned(a), learned(b)

  def describe(r):
    return f'{r["family"]} {stats.format_spread(r["scores"])} ({status(r)})'

  if preview_rule and not (la and lb):
    return Outcome(None, f'{describe(a)} vs {describe(b)}: {PREVIEW}', preview=True)
  if la and lb:
    faster = stats.separated([-s for s in a['steps_to_criterion']],
                             [-s for s in b['steps_to_criterion']])
    speed = f'; {fa if faster > 0 else fb} learned faster' if faster else ''
    return Outcome(None, f'both learned ({fa} in {steps_text(a)} steps, {fb} in '
                         f'{steps_text(b)}){speed}')
  if at_chance(a) and at_chance(b):
    return Outcome(None, f'neither learned: {describe(a)} vs {describe(b)}, both at '
                         f'chance ({a["chance"]:.2f})')
  side = stats.separated(a['scores'], b['scores'])
  if side:
    winner, loser = (a, b) if side > 0 else (b, a)
    return Outcome(winner['family'], f'{describe(winner)} vs {describe(loser)}: ranges '
                                     'disjoint')
  n = min(len(a['scores']), len(b['scores']))
  return Outcome(None, f'{describe(a)} vs {describe(b)}: not separable at {n} seeds')


def breaking_point(records: Sequence[dict[str, Any]], axis: str,
                   key: str = 'difficulty') -> str:
  """Where one family stops learning as ``record[key]`` grows (its cells, any order), in
  words about ``axis``: ``'learned up to delay=40, not at 160'``, ``'learned at every
  delay tried'``, ...; cells out of memory are left out and named."""
  skipped = [r[key] for r in records if out_of_memory(r)]
  rows = sorted(measured(records), key=lambda r: r[key])
  if skipped:
    note = f' ({axis}={", ".join(map(str, sorted(skipped)))} {NOT_MEASURED})'
    return (_breaking_point(rows, axis, key) if rows else 'nothing measured') + note
  return _breaking_point(rows, axis, key)


def _breaking_point(rows: Sequence[dict[str, Any]], axis: str, key: str) -> str:
  """``breaking_point`` of measured ``rows``, sorted by ``key``."""
  ok = [learned(r) for r in rows]
  if all(ok):
    return f'learned at every {axis} tried (up to {rows[-1][key]})'
  if not any(ok):
    return f'learned at no {axis} tried ({rows[0][key]} to {rows[-1][key]})'
  first_fail = ok.index(False)
  if first_fail and not any(ok[first_fail:]):
    return f'learned up to {axis}={rows[first_fail - 1][key]}, not at {rows[first_fail][key]}'
  return f'learned at {axis} in {[r[key] for r, x in zip(rows, ok) if x]} only'
