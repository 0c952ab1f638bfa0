"""How trained cells become claims: spread over seeds, the disjoint-range rule, "learned in
K steps" vs "not learned within B", where a family breaks, and the published checks.

Cells here are synthetic records (no training), so every rule is checked against values
chosen to sit on each side of it."""

from __future__ import annotations

import itertools
import math

import pytest

from experiments.comparison import cells, longrange, published, stats
from experiments.comparison.suite import SUITES


def test_spread_and_format_skip_missing_values():
  assert stats.spread([0.5, None, 0.7, math.nan, 0.9]) == {
      'mean': pytest.approx(0.7), 'min': 0.5, 'max': 0.9, 'n': 3}
  assert stats.format_spread([0.5, 0.9]) == '0.700 [0.500-0.900]'
  assert stats.format_spread([0.25]) == '0.250'
  assert stats.format_spread([]) == 'n/a'


@pytest.mark.parametrize('a,b,want', [
    ([0.9, 0.95, 0.97], [0.5, 0.6, 0.89], 1),
    ([0.5, 0.6, 0.89], [0.9, 0.95, 0.97], -1),
    ([0.5, 0.9], [0.6, 0.7], 0),          # nested ranges overlap
    ([0.5, 0.7], [0.7, 0.8], 0),          # touching ranges overlap
    ([0.5], [], 0),
])
def test_separated_is_the_disjoint_range_rule(a, b, want):
  assert stats.separated(a, b) == want
  assert stats.separated(b, a) == -want


def test_chance_of_disjoint_ranges_matches_enumeration():
  # Brute force: every way to label 6 (or 4) exchangeable sorted values as A or B.
  for n in (2, 3):
    labelings = list(itertools.combinations(range(2 * n), n))
    disjoint = sum(max(a) < min(set(range(2 * n)) - set(a)) or
                   min(a) > max(set(range(2 * n)) - set(a)) for a in labelings)
    assert stats.chance_probability_disjoint(n, n) == pytest.approx(disjoint / len(labelings))


def _cell(family, scores, steps, budget=1000, chance=0.1, difficulty=10):
  record = {'family': family, 'scores': scores, 'steps_to_criterion': steps,
            'reached': sum(s is not None for s in steps), 'budget': budget,
            'chance': chance, 'criterion': 'validation token_accuracy >= 0.99',
            'difficulty': difficulty}
  record['status'] = cells.status(record)
  return record


def test_status_separates_learned_partly_and_not_learned():
  assert cells.status(_cell('a', [1, 1], [100, 200])) == 'learned'
  assert cells.status(_cell('a', [1, 0.5], [100, None])) == 'learned by 1/2 seeds'
  assert cells.status(_cell('a', [0.5, 0.5], [None, None])) == 'not learned within 1000 steps'
  assert cells.steps_text(_cell('a', [1, 1, 1], [100, 200, 300])) == '200 [100-300]'
  assert cells.steps_text(_cell('a', [1, 0.3], [100, None])) == '100 (1/2 seeds)'


def test_compare_names_a_winner_only_on_disjoint_ranges():
  fast = _cell('transformer', [1.0, 0.995, 0.999], [100, 200, 150])
  slow = _cell('lstm', [0.995, 1.0, 0.992], [700, 900, 800])
  both = cells.compare(fast, slow)
  assert both.winner is None and 'both learned' in both.text
  assert 'transformer learned faster' in both.text
  failed = _cell('lstm', [0.3, 0.35, 0.4], [None] * 3)
  got = cells.compare(fast, failed)
  assert got.winner == 'transformer' and 'not learned within 1000 steps' in got.text
  close = _cell('lstm', [0.96, 0.999, 0.98], [None, 300, None])
  got = cells.compare(fast, close)
  assert got.winner is None and 'not separable at 3 seeds' in got.text
  flat_a = _cell('a', [0.11, 0.12], [None, None])
  flat_b = _cell('b', [0.1, 0.13], [None, None])
  assert 'neither learned' in cells.compare(flat_a, flat_b).text
  # Disjoint but both at chance: still "neither learned", never a winner.
  at_chance = cells.compare(_cell('a', [0.14, 0.15], [None] * 2),
                            _cell('b', [0.10, 0.11], [None] * 2))
  assert at_chance.winner is None and 'neither learned' in at_chance.text


def test_preview_rule_never_names_a_winner_on_unconverged_cells():
  learned = _cell('transformer', [1.0, 1.0], [100, 100])
  failed = _cell('lstm', [0.2, 0.25], [None, None])
  got = cells.compare(learned, failed, preview_rule=True)
  assert got.preview and got.winner is None and cells.PREVIEW in got.text
  both = cells.compare(learned, _cell('lstm', [1.0, 1.0], [300, 400]), preview_rule=True)
  assert not both.preview


def test_breaking_point_reads_the_difficulty_axis():
  rows = [_cell('lstm', [1.0], [100], difficulty=10),
          _cell('lstm', [1.0], [500], difficulty=40),
          _cell('lstm', [0.2], [None], difficulty=160)]
  assert cells.breaking_point(rows[::-1], 'delay') == 'learned up to delay=40, not at 160'
  assert cells.breaking_point(rows[:2], 'delay') == 'learned at every delay tried (up to 40)'
  assert cells.breaking_point(rows[2:], 'delay').startswith('learned at no delay tried')


def _longrange(task, family, scores, steps, difficulty, width=None):
  return {**_cell(family, scores, steps, difficulty=difficulty), 'task': task,
          'width': width, 'axis': 'x'}


def test_published_checks_decide_on_both_sides():
  solved, failed = ([1.0, 1.0, 1.0], [100, 100, 100]), ([0.3, 0.3, 0.3], [None] * 3)
  mqar = [_longrange('mqar', 'transformer', *solved, d, w) for d in (4, 16) for w in (32, 64)]
  mqar += [_longrange('mqar', f, *failed, d, w) for f in ('lstm', 's4d') for d in (4, 16)
           for w in (32, 64)]
  mqar += [_longrange('mqar', 'mamba', [0.5, 0.55, 0.6], [None] * 3, 16, 32),
           _longrange('mqar', 'mamba', [0.8, 0.85, 0.9], [None] * 3, 16, 64)]
  assert published.check_mqar({'longrange': mqar})[1] == 'reproduced'
  broken = [dict(r, scores=[0.9, 0.9, 0.9]) if r['family'] == 'transformer' else r
            for r in mqar]
  assert published.check_mqar({'longrange': broken})[1] == 'not reproduced'
  assert published.check_mqar({})[1] == published.NOT_MEASURED

  sel = [_longrange('selective_copying', 'mamba', [0.98, 0.99, 1.0], [1, 1, 1], 128),
         _longrange('selective_copying', 's4d', [0.5, 0.55, 0.6], [None] * 3, 128)]
  assert published.check_selective_copying({'longrange': sel})[1] == 'reproduced'
  sel[1] = dict(sel[1], scores=[0.7, 0.7, 0.7])
  assert published.check_selective_copying({'longrange': sel})[1] == 'not reproduced'

  ind = [_longrange('induction_heads', 'transformer', *solved, 32),
         _longrange('induction_heads', 'mamba', *solved, 32),
         _longrange('induction_heads', 'lstm', *failed, 32)]
  assert published.check_induction({'longrange': ind})[1] == 'reproduced'
  ind[2] = _longrange('induction_heads', 'lstm', *solved, 32)
  assert published.check_induction({'longrange': ind})[1] == 'not reproduced'

  copy = [_longrange('copying', 'lstm', *solved, 10),
          _longrange('copying', 'lstm', *failed, 160)]
  assert published.check_copying({'longrange': copy})[1] == 'reproduced'
  copy[1] = _longrange('copying', 'lstm', *solved, 160)
  assert published.check_copying({'longrange': copy})[1] == 'not reproduced'

  def mem(model, power):
    return [{'model': model, 'seq_len': n, 'train_temp_mib': n ** power,
             'infer_temp_mib': n ** power} for n in (256, 512, 1024, 2048)]

  good = mem('transformer', 2.0) + mem('lstm', 1.0)
  assert published.check_memory({'memory': good})[1] == 'reproduced'
  assert published.check_memory({'memory': mem('transformer', 1.2)})[1] == 'not reproduced'


def test_published_table_counts_and_marks_previews():
  finding = published.run([], preview=True)
  assert finding.verdict == '0 reproduced, 0 not reproduced, 5 not measured in this run.'
  assert [r['claim'] for r in finding.records] == ['a', 'b', 'c', 'd', 'e']


def test_longrange_verdict_counts_wins_ties_and_losses_and_breaking_points():
  solved, failed = ([1.0, 1.0, 1.0], [100, 120, 140]), ([0.2, 0.25, 0.3], [None] * 3)
  records = [
      _longrange('copying', 'transformer', *solved, 10),     # both learned: tie
      _longrange('copying', 'lstm', *solved, 10),
      _longrange('copying', 'transformer', *solved, 160),    # win
      _longrange('copying', 'lstm', *failed, 160),
      _longrange('mqar', 'transformer', *failed, 8, 32),     # loss
      _longrange('mqar', 'lstm', [0.5, 0.55, 0.6], [None] * 3, 8, 32)]
  standard = SUITES['standard']
  verdict = longrange._verdict(records, standard)  # pylint: disable=protected-access
  assert verdict.startswith('Mixed: the Transformer beat the LSTM in 1, tied in 1 and '
                            'lost in 1 of 3 settings')
  assert 'copying/lstm: learned up to x=10, not at 160' in verdict
  # The quick suite never names a winner on runs that did not converge.
  quick = longrange._verdict(records, SUITES['quick'])  # pylint: disable=protected-access
  assert quick.startswith('Not separable: the Transformer beat the LSTM in 0, tied in 1 '
                          'and lost in 0 of 1 settings')
  assert '2 more are previews' in quick
