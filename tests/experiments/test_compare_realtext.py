"""Comparison report, experiment 8 (real text): TFDS route on mocked data, the user's CSV,
and no data at all."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.comparison import realtext
from experiments.comparison.suite import SUITES

SMOKE = SUITES['smoke']
N = 16  # mocked examples per split


def test_tfds_route_trains_on_mocked_sst2(tmp_path, monkeypatch):
  # One family here and another in the CSV test: every extra family costs a compile
  # (~5 s), and the verdict logic is tested separately below.
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path / 'data'))
  with tfds.testing.mock_data(num_examples=N):
    finding = realtext.run(SMOKE, ['transformer'], str(tmp_path), seed=0)
  (row,) = finding.records
  assert row['family'] == 'transformer' and row['model'] == 'transformer encoder'
  assert row['model_cfg']['causal'] is False  # a classifier reads the whole text
  assert row['dataset'] == 'glue/sst2'  # the first candidate
  assert row['test_examples'] == N and len(row['scores']) == SMOKE.seeds
  for accuracy in row['scores']:
    # An accuracy over N examples is a whole number of correct answers over N.
    assert 0.0 <= accuracy <= 1.0
    assert accuracy * N == pytest.approx(round(accuracy * N), abs=1e-6)
  assert 0.5 <= row['majority_baseline'] <= 1.0
  assert os.path.getsize(tmp_path / finding.figures[0]) > 1000
  assert finding.verdict.startswith('Not measured')  # needs both lstm and transformer


def _keyword_csv(path, rows: int, seed: int) -> None:
  """Sentiment decided by one keyword among neutral filler words."""
  rng = np.random.default_rng(seed)
  filler = ['the', 'movie', 'was', 'a', 'plot', 'actor', 'scene', 'and', 'it', 'film']
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['text', 'label'])
    for _ in range(rows):
      label = int(rng.integers(2))
      words = list(rng.choice(filler, size=int(rng.integers(4, 10))))
      words.insert(int(rng.integers(len(words) + 1)), ('awful', 'great')[label])
      writer.writerow([' '.join(words), ('neg', 'pos')[label]])


def test_csv_route_learns_a_keyword_rule(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path / 'empty'))
  path = tmp_path / 'reviews.csv'
  _keyword_csv(path, rows=200, seed=0)
  finding = realtext.run(SMOKE, ['lstm'], str(tmp_path), seed=0, csv_path=str(path))
  (row,) = finding.records
  assert row['dataset'] == 'csv' and row['test_examples'] == 20  # test_fraction 0.1
  assert row['model'] == 'bilstm'  # the article's classifier reads both directions
  # The keyword decides the label, so a trained model is far above chance: 17 of 20
  # right has probability 0.0013 for a coin, and the majority class is far lower.
  assert min(row['scores']) >= 0.85 and row['majority_baseline'] <= 0.7
  assert str(path) in finding.measured


def test_no_data_names_the_prepare_command_and_the_csv_flag(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path))
  finding = realtext.run(SMOKE, ['lstm', 'transformer'], str(tmp_path), seed=0)
  assert finding.verdict.startswith('Not measured') and not finding.records
  assert 'download_and_prepare()' in finding.verdict and str(tmp_path) in finding.verdict
  assert '--text_csv=<path>' in finding.verdict
  missing = str(tmp_path / 'missing.csv')
  bad = realtext.run(SMOKE, ['lstm'], str(tmp_path), seed=0, csv_path=missing)
  assert bad.verdict.startswith('Not measured') and f'{missing}: file not found' in bad.verdict


@pytest.mark.parametrize('lstm_acc,tf_acc,head', [
    ((0.80, 0.81, 0.82), (0.85, 0.88, 0.90), 'Supported'),
    ((0.85, 0.88, 0.90), (0.80, 0.81, 0.82), 'Contradicted'),
    ((0.84, 0.86, 0.88), (0.85, 0.87, 0.89), 'Not separable')])
def test_verdict_calls_a_win_only_on_disjoint_seed_ranges(lstm_acc, tf_acc, head):
  rows = [{'family': f, 'scores': list(a), 'steps_to_criterion': [None] * 3, 'reached': 0,
           'budget': 400, 'chance': 0.51, 'test_examples': 872, 'majority_baseline': 0.51,
           'criterion': 'none (full budget)'}
          for f, a in (('lstm', lstm_acc), ('transformer', tf_acc))]
  for r in rows:
    r['status'] = 'no criterion'
  assert realtext._verdict(rows).startswith(head)  # pylint: disable=protected-access
