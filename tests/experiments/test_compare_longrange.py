"""The long-range experiment end to end on the smoke suite: every cell keeps every seed,
one budget for every family, and the preview verdict at a budget that converges nowhere.
(Its own file, so that the test runner can run it beside the other report tests.)"""

from __future__ import annotations

import os

import pytest

from experiments.comparison import longrange
from experiments.comparison.suite import SUITES

SMOKE = SUITES['smoke']


def test_longrange_cells_keep_every_seed_and_one_budget(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path / 'data'))
  sizes = longrange.SIZES['smoke']
  finding = longrange.run(SMOKE, ['lstm', 'transformer'], str(tmp_path), seed=0)
  rows = finding.records
  expected = {(t, f, w) for t, d in sizes.tasks.items() for w in (d.widths or (None,))
              for f in ('lstm', 'transformer')}
  assert {(r['task'], r['family'], r['width']) for r in rows} == expected
  assert SMOKE.tune_once_per_task and len(sizes.tasks['mqar'].widths) > 1
  for r in rows:
    # Every seed of the chosen rate is kept, and every member of the grid.
    assert r['seeds'] == SMOKE.seed_list and len(r['scores']) == SMOKE.seeds
    hardest = longrange._tuning_setting(sizes.tasks[r['task']])
    tuning = next(t for t in rows if (t['task'], t['family']) == (r['task'], r['family'])
                  and (t['difficulty'], t['width']) == hardest)
    assert r['lr_tuned_at'] == longrange._setting(tuning)
    first = [m for m in r['members'] if m['seed'] == SMOKE.seed_list[0]]
    rest = [m for m in r['members'] if m['seed'] != SMOKE.seed_list[0]]
    if r is tuning:
      # The rate is tuned on the first seed; the other seeds train with the chosen one.
      assert sorted(m['learning_rate'] for m in first) == sorted(SMOKE.learning_rates)
    else:
      # Every other setting of the task reuses that choice: its seeds, that rate only.
      assert r['learning_rate'] == tuning['learning_rate']
      assert [m['learning_rate'] for m in first] == [r['learning_rate']]
    assert [m['learning_rate'] for m in rest] == [r['learning_rate']] * (SMOKE.seeds - 1)
    assert r['learning_rate'] in SMOKE.learning_rates and r['budget'] == sizes.steps
    assert all(m['steps'] <= sizes.steps for m in r['members'])
    assert r['score_min'] <= r['score_mean'] <= r['score_max']
    assert set(r['curves']) == set(SMOKE.seed_list) and r['flops_per_token'] > 0
    assert r['status'] == longrange.cells.status(r)
  for task, diff in sizes.tasks.items():
    if diff.widths:  # the same width for every family (Zoology): no parameter matching
      assert all(r['d_model'] == r['width'] for r in rows if r['task'] == task)
    else:
      counts = [r['params'] for r in rows if r['task'] == task]
      assert max(counts) < 1.35 * min(counts)  # matched to one parameter budget
    if diff.test_lengths:
      for r in (r for r in rows if r['task'] == task):
        assert set(r['extra_scores']) == {f'seq_len={n}' for n in diff.test_lengths}
  # The adding problem's score is the fraction of the predict-the-mean error removed.
  for r in (r for r in rows if r['task'] == 'adding'):
    mse = [m['mse'] for m in r['test_metrics']]
    assert r['scores'] == pytest.approx([1 - 6 * v for v in mse])
  # A 4-step budget converges nowhere: the smoke suite is a preview and says so.
  assert finding.verdict.startswith('Preview only')
  for name in finding.figures:
    assert os.path.getsize(tmp_path / name) > 1000
