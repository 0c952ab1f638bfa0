"""marker_order: labels by a brute-force reading, balance, order as the only signal.

Symbols are looked up by name in the task's metadata vocabulary, so nothing here reuses
the generator's id constants.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from seqjax.data.synthetic import TASKS

OPTIONS = {'seq_len': 7, 'num_markers': 3, 'num_symbols': 3}
SIZES = {'num_train': 900, 'num_validation': 8, 'num_test': 450}


def _load(data_dir, seed=0, split='train'):
  task = TASKS['marker_order'](data_dir=data_dir, seed=seed, **SIZES, **OPTIONS)
  ds = task.open(split)
  return task, [ds[i] for i in range(len(ds))]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def train(data_dir):
  return _load(data_dir)


def _first_marker(names: list[str]) -> int:
  """Reads left to right; returns k for the first token named ``m<k>``."""
  for name in names:
    if name.startswith('m'):
      return int(name[1:])
  raise AssertionError(f'no marker in {names}')


def _bag(tokens: np.ndarray) -> tuple[int, ...]:
  return tuple(sorted(tokens.tolist()))


def test_labels_match_a_brute_force_reading(train):
  task, examples = train
  vocab = task.metadata['vocab']
  markers = sorted(v for v in vocab if v.startswith('m'))
  assert task.spec.num_classes == len(markers) == OPTIONS['num_markers']
  assert task.spec.kind == 'classification' and task.spec.order_sensitive
  for ex in examples:
    names = [vocab[i] for i in ex['inputs']]
    assert len(names) == OPTIONS['seq_len']
    # Every marker exactly once; everything else a filler symbol.
    assert sorted(n for n in names if n.startswith('m')) == markers
    assert all(n.startswith('f') for n in names if not n.startswith('m'))
    assert ex['label'] == _first_marker(names)


def test_classes_are_balanced(train):
  _, examples = train
  counts = collections.Counter(int(ex['label']) for ex in examples)
  k, n = OPTIONS['num_markers'], len(examples)
  assert set(counts) == set(range(k))
  # Each marker is first with probability 1/k: within 4 binomial standard errors.
  tolerance = 4 * np.sqrt(n * (1 / k) * (1 - 1 / k))
  assert all(abs(c - n / k) < tolerance for c in counts.values())


def test_token_multisets_carry_no_label_information(data_dir, train):
  _, examples = train
  _, test = _load(data_dir, split='test')
  k = OPTIONS['num_markers']
  # The best classifier of the bag of tokens alone: the majority training label per bag.
  votes = collections.defaultdict(collections.Counter)
  for ex in examples:
    votes[_bag(ex['inputs'])][int(ex['label'])] += 1
  hits = [votes[_bag(ex['inputs'])].most_common(1)[0][0] == ex['label']
          for ex in test if _bag(ex['inputs']) in votes]
  assert len(hits) > 0.9 * len(test)  # few bags, so almost every test bag was seen
  assert abs(np.mean(hits) - 1 / k) < 4 * np.sqrt((1 / k) * (1 - 1 / k) / len(hits))
  # Per class, the token histograms agree: within 4 standard errors of a difference of
  # two frequencies (a label-dependent filler draw would move them apart).
  counts = {c: collections.Counter() for c in range(k)}
  for ex in examples:
    counts[int(ex['label'])].update(ex['inputs'].tolist())
  totals = {c: sum(counts[c].values()) for c in range(k)}
  assert all(counts[c].keys() == counts[0].keys() for c in range(k))
  for token in counts[0]:
    freqs = [counts[c][token] / totals[c] for c in range(k)]
    p = np.mean(freqs)
    tolerance = 4 * np.sqrt(2 * p * (1 - p) / min(totals.values()))
    assert max(freqs) - min(freqs) < tolerance, (token, freqs)


def test_determinism_by_seed(tmp_path, data_dir, train):
  _, first = train
  _, again = _load(tmp_path / 'elsewhere')  # regenerated from scratch
  _, other = _load(tmp_path / 'other', seed=1)
  same = lambda a, b: all(np.array_equal(a[key], b[key]) for key in a)
  assert all(same(a, b) for a, b in zip(first, again, strict=True))
  assert not all(same(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize('options, match', [
    ({'num_markers': 1}, r'num_markers=1 must be >= 2'),
    ({'seq_len': 3, 'num_markers': 4}, r'num_markers=4 must be <= seq_len=3'),
    ({'num_symbols': 0}, r'num_symbols=0 must be >= 1'),
    ({'seq_len': 'long'}, r"seq_len='long' must be an integer"),
])
def test_bad_options_raise_one_line_value_errors(options, match):
  with pytest.raises(ValueError, match=match) as error:
    TASKS['marker_order'](**options)
  assert '\n' not in str(error.value) and "'marker_order'" in str(error.value)
