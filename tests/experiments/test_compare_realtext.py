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
  assert row['family'] == 'transformer'
  assert row['dataset'] == 'glue/sst2'  # the first candidate
  assert row['test_examples'] == N and 0.0 <= row['test_accuracy'] <= 1.0
  # An accuracy over N examples is a whole number of correct answers over N.
  assert row['test_accuracy'] * N == pytest.approx(round(row['test_accuracy'] * N),
                                                   abs=1e-6)
  assert 0.5 <= row['majority_baseline'] <= 1.0
  assert row['std_error'] == pytest.approx(
      np.sqrt(row['test_accuracy'] * (1 - row['test_accuracy']) / N))
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
  # The keyword decides the label, so a trained model is far above chance: 17 of 20
  # right has probability 0.0013 for a coin, and the majority class is far lower.
  assert row['test_accuracy'] >= 0.85 and row['majority_baseline'] <= 0.7
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


@pytest.mark.parametrize('lstm_acc,tf_acc,head', [(0.80, 0.90, 'Supported'),
                                                  (0.90, 0.80, 'Contradicted'),
                                                  (0.85, 0.86, 'Mixed')])
def test_verdict_calls_a_win_only_beyond_two_standard_errors(lstm_acc, tf_acc, head):
  n = 872  # SST-2's test split
  rows = [{'family': f, 'test_accuracy': a, 'majority_baseline': 0.51,
           'std_error': np.sqrt(a * (1 - a) / n)}
          for f, a in (('lstm', lstm_acc), ('transformer', tf_acc))]
  # Reference: the difference against twice the standard error of a difference.
  noise = 2 * np.sqrt(rows[0]['std_error'] ** 2 + rows[1]['std_error'] ** 2)
  assert (abs(tf_acc - lstm_acc) > noise) == (head != 'Mixed')
  assert realtext._verdict(rows).startswith(head)  # pylint: disable=protected-access
