"""Trying a big suite on small hardware: cells that do not fit in memory are outcomes, and
``--max_params`` caps the models.

The out-of-memory cell is real: an LSTM of width 2**18 asks XLA:CPU for 1 TiB for its
first weight matrix, which fails at once (no memory is touched).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from experiments.comparison import (cells, longrange, positions, published, rate_walk,
                                    scale, training)
from experiments.comparison.measure import OUT_OF_MEMORY, ran_out_of_memory
from experiments.comparison.suite import SUITES
from seqjax.training import sweep
from seqjax.training.errors import UserError

# A copying cell small enough to train in seconds (only its width is ever huge here).
CELL = dict(task='copying', seeds=[0, 1], learning_rates=[1e-2], steps=2, eval_every=1,
            task_options={'delay': 4, 'num_tokens': 2},
            model_overrides={'num_layers': 1}, batch_size=2, num_train=16,
            num_validation=8, num_test=8)
TOO_WIDE = 2 ** 18  # LSTM input-to-gates matrix: 2**18 x 2**20 floats = 1 TiB


def _one_tebibyte(*_):
  """A real allocation XLA:CPU refuses (RESOURCE_EXHAUSTED), as a too-big program."""
  return jax.block_until_ready(jax.jit(lambda x: jnp.broadcast_to(x, (2 ** 38,)) * 2)(
      jnp.float32(1)))


@pytest.fixture(scope='module')
def oom_cell(tmp_path_factory):
  """The record of a cell whose model does not fit in memory, labelled as a long-range
  cell (copying at delay 4)."""
  record = training.train_cell(family='lstm', d_model=TOO_WIDE, **CELL)
  return {'axis': 'delay', 'difficulty': 4, 'width': None, **record}


def _measured(family: str, delay: int, scores: list[float], reached: int) -> dict:
  """A trained copying cell's record (the fields the verdict rules read)."""
  steps = [100] * reached + [None] * (len(scores) - reached)
  return {'task': 'copying', 'family': family, 'axis': 'delay', 'difficulty': delay,
          'width': None, 'scores': scores, 'steps_to_criterion': steps,
          'reached': reached, 'criterion': 'validation token_accuracy >= 0.99',
          'budget': 200, 'chance': 0.125, 'test_examples': 512,
          'status': cells.status({'criterion': 'x', 'steps_to_criterion': steps,
                                  'reached': reached, 'budget': 200})}


def test_a_cell_that_does_not_fit_is_recorded_out_of_memory(oom_cell):
  assert oom_cell['status'] == OUT_OF_MEMORY == cells.status(oom_cell)
  assert oom_cell['scores'] == [] and oom_cell['steps_to_criterion'] == []
  assert oom_cell['members'] == [] and oom_cell['reached'] == 0
  assert 'Out of memory allocating' in oom_cell['error']
  # What was planned is kept: the model that did not fit, the budget, the grid.
  assert oom_cell['d_model'] == TOO_WIDE and oom_cell['params'] > 2 ** 38
  assert oom_cell['budget'] == 2 and oom_cell['learning_rate'] is None
  assert cells.steps_text(oom_cell) == OUT_OF_MEMORY


def test_a_cell_error_that_is_not_out_of_memory_still_raises():
  with pytest.raises(UserError, match='learning rates must be positive'):
    training.train_cell(family='lstm', d_model=8, **dict(CELL, learning_rates=[-1.0]))


def test_an_extra_test_length_that_does_not_fit_is_out_of_memory_for_that_length_only(
    monkeypatch, tmp_path):
  real = sweep.evaluate_params

  def evaluate(eval_step, params, task, split, *args):
    if task.spec.max_len > 16:  # the longer test length: a real refused allocation
      _one_tebibyte()
    return real(eval_step, params, task, split, *args)

  monkeypatch.setattr(sweep, 'evaluate_params', evaluate)
  extra = {'seq_len=32': {'delay': 24}, 'seq_len=12': {'delay': 3}}
  record = training.train_cell(family='lstm', d_model=8, max_len=40,
                               extra_tests=extra, **CELL)
  assert record['status'] != OUT_OF_MEMORY and len(record['scores']) == 2
  assert record['extra_status'] == {'seq_len=32': OUT_OF_MEMORY}
  assert record['extra_scores']['seq_len=32'] == [None, None]
  assert all(0 <= s <= 1 for s in record['extra_scores']['seq_len=12'])
  sizes = dataclasses.replace(SUITES['smoke'].sized(longrange.SIZES), tasks={
      'copying': longrange.Difficulty('delay', (4,), test_lengths=(12, 32))})
  records = [{'axis': 'delay', 'difficulty': 4, 'width': None, **record}]
  summary = longrange._summary(records, sizes, SUITES['smoke'])
  assert f'| {OUT_OF_MEMORY} |' in summary.split('Length generalisation')[1]
  figures = longrange._figures(records, sizes, str(tmp_path))
  assert figures == ['longrange_copying_generalisation.png', 'longrange_copying_curves.png']
  assert all((tmp_path / f).is_file() for f in figures)
  monkeypatch.setattr(sweep, 'evaluate_params', lambda *a: 1 + 'a')
  with pytest.raises(TypeError):  # any other error in an extra test still raises
    sweep._extra_test(None, None, None, 1, None, 'x', skip_error=ran_out_of_memory)


def test_verdicts_skip_the_out_of_memory_cell_and_count_the_others(oom_cell):
  won = _measured('transformer', 4, [1.0, 1.0], 2)
  got = cells.compare(won, oom_cell)
  assert not got.measured and got.winner is None
  assert got.text == f'{cells.NOT_MEASURED} (lstm)'
  # Delay 2 is measured for both: the Transformer learned, the LSTM stayed at chance.
  records = [_measured('transformer', 2, [1.0, 1.0], 2),
             _measured('lstm', 2, [0.12, 0.13], 0), won, oom_cell]
  verdict = longrange._verdict(records, dataclasses.replace(SUITES['smoke'], preview=False))
  assert verdict.startswith('Supported: the Transformer beat the LSTM in 1, tied in 0 and '
                            'lost in 0 of 1 settings')
  assert f'1 more settings {cells.NOT_MEASURED}' in verdict
  assert f'lstm: learned at no delay tried (2 to 2) (delay=4 {cells.NOT_MEASURED})' in verdict
  assert not rate_walk.learned_something(oom_cell)


def test_published_checks_leave_the_out_of_memory_cell_out_and_say_so(oom_cell):
  lstm_easy = _measured('lstm', 2, [1.0, 1.0], 2)
  lstm_hard = _measured('lstm', 8, [0.2, 0.3], 0)
  findings = {'longrange': [lstm_easy, lstm_hard, oom_cell]}
  text, verdict = published.check_copying(findings)
  assert verdict == 'reproduced'  # delay 2 learned, delay 8 below it; delay 4 left out
  assert 'lstm@4' not in text
  assert published.out_of_memory_note(findings, 'copying') == (
      f'; {cells.NOT_MEASURED}: lstm@delay=4 (left out of the check)')
  # With only the out-of-memory cell and one other, the check has nothing to compare.
  assert published.check_copying({'longrange': [lstm_easy, oom_cell]})[1] == 'not measured'


def test_max_params_caps_targets_and_the_scale_ladder_keeping_its_shape():
  full = dataclasses.replace(SUITES['full'], max_params=2_000_000)
  ladder = full.sized(scale.SIZES).budgets
  assert scale.SIZES['full'].budgets == (1_000_000, 4_000_000, 16_000_000, 64_000_000)
  assert ladder == (1_000_000, 2_000_000)  # rungs below the cap kept, the rest -> cap
  assert full.sized(longrange.SIZES).target_params == 1_000_000  # under the cap
  small = dataclasses.replace(full, max_params=200_000)
  assert small.sized(longrange.SIZES).target_params == 200_000
  assert small.sized(scale.SIZES).budgets == (200_000,)
  assert small.capped and not SUITES['full'].capped
  assert SUITES['full'].sized(scale.SIZES) == scale.SIZES['full']  # no cap: unchanged


def test_max_params_keeps_only_the_mqar_widths_under_the_cap():
  suite = dataclasses.replace(SUITES['full'], max_params=1_000_000)
  families = ['lstm', 'transformer']
  sizes = longrange.SIZES['full']
  mqar = sizes.tasks['mqar']
  capped = longrange.cap_widths(sizes, suite, families).tasks['mqar']
  assert len(capped.widths) >= 2 and capped.widths == mqar.widths[:len(capped.widths)]
  largest = lambda w: longrange._largest('mqar', mqar, w, sizes, families)
  assert all(largest(w) <= suite.max_params for w in capped.widths[1:])
  dropped = mqar.widths[len(capped.widths):]
  assert dropped and all(largest(w) > suite.max_params for w in dropped)
  # Even a cap below every width keeps the smallest, so every task is still trained.
  tiny = longrange.cap_widths(sizes, dataclasses.replace(suite, max_params=10), families)
  assert tiny.tasks['mqar'].widths == (min(mqar.widths),)
  assert tiny.tasks['copying'] == sizes.tasks['copying']


def test_scale_throughput_of_a_step_that_does_not_fit_is_nan():
  fake_program = (jax.jit(lambda x: jnp.broadcast_to(x, (2 ** 38,)) * 2),
                  (jnp.float32(1),), 128, 1)
  got = scale.train_step_throughput(fake_program, repeats=1)
  assert math.isnan(got['tokens_per_s']) and math.isnan(got['ms_per_step'])


def test_the_long_range_table_shows_an_out_of_memory_cell_without_none(oom_cell):
  suite = SUITES['smoke']
  table = longrange._summary([oom_cell], suite.sized(longrange.SIZES), suite)
  row = next(line for line in table.splitlines() if line.startswith('| copying'))
  assert OUT_OF_MEMORY in row and 'None' not in row
  assert row.split(' | ')[5] == '-'   # no learning rate was chosen


def test_max_examples_caps_every_split_a_long_range_cell_opens():
  suite = dataclasses.replace(SUITES['full'], max_examples=48)
  sizes = suite.sized(longrange.SIZES)
  jobs = [job for job, _ in longrange._cells(sizes, suite, ['lstm'])]
  assert jobs and all(job['num_train'] == job['num_validation'] == job['num_test'] == 48
                      for job in jobs)
  uncapped = SUITES['full'].sized(longrange.SIZES)
  assert (uncapped.num_validation, uncapped.num_test) == (256, 512)
  assert suite.sized(positions.SIZES).num_validation == 48
