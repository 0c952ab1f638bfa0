"""The long-range experiment end to end on the smoke suite: every cell keeps every seed,
one budget for every family, and the preview verdict at a budget that converges nowhere.
(Its own file, so that the test runner can run it beside the other report tests.)"""

from __future__ import annotations

import dataclasses
import os

import pytest

from experiments.comparison import longrange, rate_walk
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
    # The rate comes from one setting on the task's walk (hardest first): the first
    # where the best rate learned something, else the easiest.
    walk = [next(t for t in rows if (t['task'], t['family'], t['difficulty'], t['width'])
                 == (r['task'], r['family'], *setting))
            for setting in rate_walk.settings(sizes.tasks[r['task']])]
    stop = next((k for k, t in enumerate(walk) if rate_walk.learned_something(t)),
                len(walk) - 1)
    tuning = walk[stop]
    assert r['lr_tuned_at'] == rate_walk.setting(tuning)
    assert [w['setting'] for w in r['lr_walk']] == [rate_walk.setting(t)
                                                    for t in walk[:stop + 1]]
    first = [m for m in r['members'] if m['seed'] == SMOKE.seed_list[0]]
    rest = [m for m in r['members'] if m['seed'] != SMOKE.seed_list[0]]
    if r is tuning:
      # The rate is tuned on the first seed; the other seeds train with the chosen one.
      assert sorted(m['learning_rate'] for m in first) == sorted(SMOKE.learning_rates)
    else:
      # Every other setting of the task reuses that choice: its seeds, that rate only
      # (a setting passed on the walk keeps its grid only if it chose the same rate).
      assert r['learning_rate'] == tuning['learning_rate']
      if any(r is t for t in walk[:stop]):  # passed on the walk: kept if it chose the
        assert len(first) in (1, len(SMOKE.learning_rates))  # same rate, else trained again
      else:
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


# Validation scores of the first seed per (family, delay, rate) in a scripted copying
# sweep (chance 1/8; halfway to the 0.99 criterion is 0.5575). The LSTM learns nothing at
# delay 20 (its best rate there is noise), something at 10; the Transformer at every delay.
_SCRIPT = {('lstm', 20): {1e-3: 0.13, 3e-3: 0.12, 1e-2: 0.14},
           ('lstm', 10): {1e-3: 0.30, 3e-3: 0.60, 1e-2: 0.50},
           ('lstm', 5): {1e-3: 0.70, 3e-3: 0.99, 1e-2: 0.99},
           ('transformer', 20): {1e-3: 0.90, 3e-3: 0.99, 1e-2: 0.40},
           ('transformer', 10): {1e-3: 0.99, 3e-3: 0.99, 1e-2: 0.99},
           ('transformer', 5): {1e-3: 0.99, 3e-3: 0.99, 1e-2: 0.99}}


def _scripted_cell(task, family, seeds, learning_rates, task_options, **_):
  scores = _SCRIPT[family, task_options['delay']]
  rate = max(learning_rates, key=lambda lr: scores[lr])
  members = [{'seed': seeds[0], 'learning_rate': lr, 'validation_score': scores[lr]}
             for lr in learning_rates]
  return {'task': task, 'family': family, 'seeds': list(seeds), 'chance': 1 / 8,
          'members': members, 'learning_rate': rate, 'delay': task_options['delay'],
          'grid': list(learning_rates)}


def test_rate_is_chosen_where_some_rate_learned_and_reused(monkeypatch):
  ran = []

  def serial(jobs, workers, then):  # run_cells's contract, in this process
    jobs, results = list(jobs), []
    while len(results) < len(jobs):
      ran.append(jobs[len(results)])
      results.append(_scripted_cell(**jobs[len(results)]))
      jobs += then(len(results) - 1, results[-1])
    return results

  monkeypatch.setattr(rate_walk.pool, 'run_cells', serial)
  suite = dataclasses.replace(SMOKE, learning_rates=(1e-3, 3e-3, 1e-2))
  sizes = dataclasses.replace(longrange.SIZES['smoke'], tasks={
      'copying': longrange.Difficulty('delay', (5, 10, 20), {'num_tokens': 5})})
  planned = longrange._cells(sizes, suite, ['lstm', 'transformer'])
  records = rate_walk.train(planned, sizes.tasks, suite)
  got = {(r['family'], r['delay']): r for r in records}
  # The LSTM walks 20 -> 10 and stops there; the Transformer chooses at 20.
  assert got['lstm', 5]['lr_tuned_at'] == 'delay=10'
  assert [w['setting'] for w in got['lstm', 5]['lr_walk']] == ['delay=20', 'delay=10']
  assert [w['learned_something'] for w in got['lstm', 5]['lr_walk']] == [False, True]
  assert {r['learning_rate'] for (f, _), r in got.items() if f == 'lstm'} == {3e-3}
  assert got['transformer', 10]['lr_tuned_at'] == 'delay=20'
  assert {r['learning_rate'] for (f, _), r in got.items() if f == 'transformer'} == {3e-3}
  # Delay 20, where the LSTM chose 1e-2 on noise, trained again with 3e-3 alone; cells
  # reached after the choice train that rate only; nothing trains twice otherwise.
  assert got['lstm', 20]['grid'] == [3e-3] and got['lstm', 10]['grid'] == [1e-3, 3e-3, 1e-2]
  assert got['lstm', 5]['grid'] == [3e-3] and got['transformer', 5]['grid'] == [3e-3]
  runs = [(j['family'], j['task_options']['delay'], tuple(j['learning_rates'])) for j in ran]
  assert len(runs) == len(set(runs)) == 6 + 1  # six cells, one trained again
