"""Synthetic tasks: every target re-derived independently, determinism, spec consistency.

Symbol ids are looked up by name in each task's metadata vocabulary, so the checks below
do not reuse the generators' constants.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from seqjax.data.synthetic import TASKS

SIZES = {'num_train': 48, 'num_validation': 8, 'num_test': 16}
# Small settings per task (the defaults are bigger, for training).
OPTIONS = {
    'copying': {'num_tokens': 5, 'delay': 7, 'num_symbols': 6},
    'selective_copying': {'seq_len': 24, 'num_tokens': 5, 'num_symbols': 6},
    'adding': {'seq_len': 20},
    'associative_recall': {'num_pairs': 5, 'num_keys': 8, 'num_values': 6},
    'mqar': {'seq_len': 32, 'num_pairs': 6, 'num_queries': 4, 'num_keys': 10,
             'num_values': 7},
    'induction_heads': {'seq_len': 12, 'num_symbols': 5},
    'listops': {'max_depth': 3, 'max_args': 4, 'max_len': 60, 'op_prob': 0.4},
    'toy_translation': {},
    'marker_order': {'seq_len': 7, 'num_markers': 3, 'num_symbols': 3},
}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def _load(data_dir, name, seed=0, split='train', **extra):
  task = TASKS[name](data_dir=data_dir, seed=seed, **SIZES, **OPTIONS[name], **extra)
  ds = task.open(split)
  return task, [ds[i] for i in range(len(ds))]


def _ids(task):
  return {symbol: i for i, symbol in enumerate(task.metadata['vocab'])}


def test_every_task_is_registered():
  # Pathfinder's pixel images have their own checks (tests/data/test_pathfinder.py).
  assert set(TASKS) == set(OPTIONS) | {'pathfinder'}


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_determinism_and_split_independence(tmp_path, data_dir, name):
  _, first = _load(data_dir, name, seed=3)
  _, again = _load(tmp_path / 'elsewhere', name, seed=3)  # regenerated from scratch
  _, other_seed = _load(data_dir, name, seed=4)
  _, test_split = _load(data_dir, name, seed=3, split='test')
  assert len(first) == SIZES['num_train'] and len(test_split) == SIZES['num_test']

  def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)

  assert all(same(a, b) for a, b in zip(first, again, strict=True))
  # Whole-list comparisons: a few short examples may coincide, the streams may not.
  assert not all(same(a, b) for a, b in zip(first, other_seed))
  assert not all(same(a, b) for a, b in zip(first, test_split))


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_examples_match_spec(data_dir, name):
  task, examples = _load(data_dir, name)
  spec = task.spec
  for ex in examples:
    assert ex['inputs'].shape[0] <= spec.max_len
    if spec.kind == 'regression':
      assert ex['inputs'].dtype == np.float32 and ex['inputs'].shape[1] == spec.input_features
      assert ex['label'].dtype == np.float32 and ex['label'].shape == ()
      continue
    assert ex['inputs'].dtype == np.int32
    # Synthetic inputs never use the reserved ids (PAD would read as padding).
    assert 4 <= ex['inputs'].min() and ex['inputs'].max() < spec.vocab_size
    if spec.kind == 'classification':
      assert ex['label'].dtype == np.int32 and 0 <= ex['label'] < spec.num_classes
    elif spec.kind == 'token':
      assert ex['targets'].shape == ex['weights'].shape == ex['inputs'].shape
      scored = ex['weights'] == 1
      assert set(np.unique(ex['weights'])) <= {0.0, 1.0} and scored.any()
      assert (ex['targets'][scored] >= 4).all() and (ex['targets'][~scored] == 0).all()
      assert ex['targets'].max() < spec.vocab_size
    else:
      assert spec.kind == 'seq2seq' and ex['targets'][-1] == 3
      assert len(ex['targets']) <= spec.max_target_len
      assert 4 <= ex['targets'][:-1].min() and ex['targets'].max() < spec.tgt_vocab_size


def test_copying_targets_are_the_prefix(data_dir):
  task, examples = _load(data_dir, 'copying')
  ids, opts = _ids(task), OPTIONS['copying']
  k, delay = opts['num_tokens'], opts['delay']
  for ex in examples:
    x = ex['inputs']
    assert len(x) == 2 * k + delay + 1
    assert (x[:k] >= ids['d0']).all()
    assert (x[k:k + delay] == ids['<blank>']).all() and x[k + delay] == ids['<marker>']
    assert (x[k + delay + 1:] == ids['<blank>']).all()
    np.testing.assert_array_equal(np.flatnonzero(ex['weights']), np.arange(len(x) - k, len(x)))
    np.testing.assert_array_equal(ex['targets'][-k:], x[:k])


def test_selective_copying_targets_are_the_data_tokens_in_order(data_dir):
  task, examples = _load(data_dir, 'selective_copying')
  ids, opts = _ids(task), OPTIONS['selective_copying']
  seq_len, k = opts['seq_len'], opts['num_tokens']
  for ex in examples:
    context = ex['inputs'][:seq_len]
    data = context[context != ids['<blank>']]
    assert len(data) == k and (data >= ids['d0']).all()
    scored = ex['weights'] == 1
    assert (ex['inputs'][scored] == ids['<marker>']).all()
    np.testing.assert_array_equal(ex['targets'][scored], data)


def test_adding_label_is_the_sum_of_the_two_marked_values(data_dir):
  _, examples = _load(data_dir, 'adding')
  half = OPTIONS['adding']['seq_len'] // 2
  for ex in examples:
    values, markers = ex['inputs'][:, 0].astype(np.float64), ex['inputs'][:, 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    marked = np.flatnonzero(markers)
    assert len(marked) == 2 and marked[0] < half <= marked[1]
    assert ((0 <= values) & (values < 1)).all()
    assert abs(float(ex['label']) - values[marked].sum()) < 1e-6


@pytest.mark.parametrize('name', ['associative_recall', 'mqar'])
def test_recall_targets_are_the_bound_values(data_dir, name):
  task, examples = _load(data_dir, name)
  opts = OPTIONS[name]
  vocab = task.metadata['vocab']
  pairs = opts['num_pairs']
  queries = opts.get('num_queries', 1)
  for ex in examples:
    x = ex['inputs']
    assert len(x) == opts.get('seq_len', 2 * pairs + 1)
    keys, values = x[:2 * pairs:2], x[1:2 * pairs:2]
    assert all(vocab[k].startswith('k') for k in keys) and len(set(keys)) == pairs
    assert all(vocab[v].startswith('v') for v in values)
    binding = dict(zip(keys.tolist(), values.tolist()))
    scored = np.flatnonzero(ex['weights'])
    assert len(scored) == queries and scored.min() >= 2 * pairs
    assert len(set(x[scored].tolist())) == queries  # each queried key asked once
    for pos in scored:
      assert ex['targets'][pos] == binding[int(x[pos])]
    region = np.delete(x[2 * pairs:], scored - 2 * pairs)
    assert all(vocab[t] == '<blank>' for t in region)


def test_induction_target_follows_the_earlier_trigger(data_dir):
  task, examples = _load(data_dir, 'induction_heads')
  trigger = _ids(task)['<trigger>']
  for ex in examples:
    x = ex['inputs']
    where = np.flatnonzero(x == trigger)
    assert len(where) == 2 and where[1] == len(x) - 1 and where[0] + 1 < where[1]
    np.testing.assert_array_equal(np.flatnonzero(ex['weights']), [len(x) - 1])
    assert ex['targets'][-1] == x[where[0] + 1]


def _listops_value(tokens: list[str]) -> int:
  """Recursive-descent evaluation of '[ OP arg ... ]' written for this test."""

  def parse(i):
    if tokens[i] != '[':
      return int(tokens[i]), i + 1
    op, args, i = tokens[i + 1], [], i + 2
    while tokens[i] != ']':
      value, i = parse(i)
      args.append(value)
    if op == 'MAX':
      result = max(args)
    elif op == 'MIN':
      result = min(args)
    elif op == 'MED':
      result = int(np.floor(np.median(args)))
    else:
      assert op == 'SM'
      result = sum(args) % 10
    return result, i + 1

  value, end = parse(0)
  assert end == len(tokens)
  return value


def _depth(tokens: list[str]) -> int:
  depth = deepest = 0
  for t in tokens:
    depth += (t == '[') - (t == ']')
    deepest = max(deepest, depth)
  return deepest


def test_listops_labels_match_an_independent_evaluator(data_dir):
  task, examples = _load(data_dir, 'listops')
  vocab, opts = task.metadata['vocab'], OPTIONS['listops']
  assert task.spec.kind == 'classification' and task.spec.num_classes == 10
  labels = []
  for ex in examples:
    tokens = [vocab[t] for t in ex['inputs']]
    assert len(tokens) <= opts['max_len'] and _depth(tokens) <= opts['max_depth']
    assert _listops_value(tokens) == ex['label']
    labels.append(int(ex['label']))
  assert max(_depth([vocab[t] for t in ex['inputs']]) for ex in examples) >= 2
  assert len(set(labels)) >= 4  # not a degenerate label distribution


_DATE_FORMATS = ('%d %b %Y', '%b %d, %Y', '%d %B %Y', '%B %d, %Y', '%d.%m.%Y', '%a %d %b %Y')


def _decode(ids, vocab):
  return ''.join(vocab[i] for i in ids)


def test_toy_translation_targets_are_iso_dates(data_dir):
  task, examples = _load(data_dir, 'toy_translation')
  src_vocab, tgt_vocab = task.metadata['source_vocab'], task.metadata['target_vocab']
  assert task.spec.vocab_size == len(src_vocab) and task.spec.tgt_vocab_size == len(tgt_vocab)
  formats_seen = set()
  for ex in examples:
    source = _decode(ex['inputs'], src_vocab)
    parsed = []
    for fmt in _DATE_FORMATS:
      try:
        parsed.append(datetime.datetime.strptime(source, fmt).date())
        formats_seen.add(fmt)
      except ValueError:
        pass
    assert parsed and len(set(parsed)) == 1, source
    assert 1950 <= parsed[0].year <= 2049
    if source[:3] in ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'):
      assert parsed[0].strftime('%a').lower() == source[:3]
    assert _decode(ex['targets'][:-1], tgt_vocab) == parsed[0].isoformat()
  assert len(formats_seen) >= 4


def test_toy_translation_reverse_variant(data_dir):
  task = TASKS['toy_translation'](data_dir=data_dir, variant='reverse', seq_len=7,
                                  num_symbols=5, **SIZES)
  src_vocab, tgt_vocab = task.metadata['source_vocab'], task.metadata['target_vocab']
  assert not set(src_vocab[4:]) & set(tgt_vocab[4:])  # distinct vocabularies
  ds = task.open('validation')
  for ex in (ds[i] for i in range(len(ds))):
    source = _decode(ex['inputs'], src_vocab)
    assert 1 <= len(source) <= 7 and set(source) <= set('abcde')
    assert ex['targets'][-1] == 3
    assert _decode(ex['targets'][:-1], tgt_vocab) == source[::-1].upper()
