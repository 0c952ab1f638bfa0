"""Batching pipeline: exact resume, seeded order, shards, bucketing, masks, filler rows."""

from __future__ import annotations

import json

import grain
import numpy as np
import pytest
from etils import epath

from seqjax.data.errors import DataError
from seqjax.data.pipeline import BatchIterator, make_eval_iterator, make_iterator
from seqjax.data.spec import BOS_ID, EOS_ID, TaskSpec

CLS = TaskSpec('toy_cls', 'classification', vocab_size=64, num_classes=3, max_len=12)


def _lengths(n):
  return [1 + (7 * i) % 11 for i in range(n)]


def _cls_data(n=23):
  # Example i: [i+4, 5, 5, ...] of length 1 + 7i mod 11, so every row names its example.
  exs = [{'inputs': np.array([i + 4] + [5] * (l - 1), np.int32), 'label': np.int32(i % 3)}
         for i, l in enumerate(_lengths(n))]
  return grain.MapDataset.source(exs)


def _ids(batch):
  return [int(x) - 4 for x, w in zip(batch['inputs'][:, 0], batch['example_weight'])
          if w > 0]


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize('drop', [True, False])
def test_resume_is_exact_across_epochs(drop):
  ds = _cls_data()
  kw = dict(batch_size=4, seed=3, drop_remainder=drop)
  full = _take(make_iterator(ds, CLS, **kw), 14)   # ~2.5 epochs
  it = make_iterator(ds, CLS, **kw)
  _take(it, 7)                                      # past the first epoch boundary
  state = json.loads(json.dumps(it.get_state()))
  resumed = make_iterator(ds, CLS, **kw)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 7), full[7:])
  # A mid-epoch state too.
  it = make_iterator(ds, CLS, **kw)
  _take(it, 2)
  resumed = make_iterator(ds, CLS, **kw)
  resumed.set_state(json.loads(json.dumps(it.get_state())))
  _assert_batches_equal(_take(resumed, 4), full[2:6])


def test_grain_checkpoint_handler_round_trip(tmp_path):
  ds = _cls_data()
  it = make_iterator(ds, CLS, batch_size=4, seed=1)
  assert isinstance(it, grain.DatasetIterator)
  _take(it, 3)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), it)
  expected = _take(it, 3)
  fresh = make_iterator(ds, CLS, batch_size=4, seed=1)
  handler.restore(epath.Path(tmp_path), fresh)
  _assert_batches_equal(_take(fresh, 3), expected)


def test_seeded_order_per_epoch():
  ds = _cls_data()
  bpe = 6  # ceil(23 / 4)

  def epochs(seed, n=2):
    it = make_iterator(ds, CLS, batch_size=4, seed=seed, drop_remainder=False)
    return [sum((_ids(b) for b in _take(it, bpe)), []) for _ in range(n)]

  a, b, c = epochs(0), epochs(0), epochs(1)
  assert a == b                                   # same seed, same stream
  assert a[0] != c[0]                             # different seed, different order
  assert a[0] != a[1]                             # epochs differ
  for order in a + c:                             # each epoch visits every example once
    assert sorted(order) == list(range(23))
  plain = make_eval_iterator(ds, CLS, batch_size=4)
  assert sum((_ids(bt) for bt in plain), []) == list(range(23))


def test_drop_remainder_and_num_epochs():
  ds = _cls_data()
  batches = list(make_iterator(ds, CLS, batch_size=4, seed=0, num_epochs=2))
  assert len(batches) == 2 * (23 // 4)
  assert all(b['example_weight'].sum() == 4 for b in batches)
  with pytest.raises(ValueError, match='batch_size=40'):
    make_iterator(ds, CLS, batch_size=40, seed=0)


@pytest.mark.parametrize('count', [2, 3, 6])
def test_shards_are_row_blocks_of_one_global_batch(count):
  """Whatever the shard count, stacking the shards' batches gives the 1-shard batch
  (same examples, order, padding and filler), so a run is the same on any topology."""
  ds = _cls_data()
  for make, kw, k in ((make_iterator, dict(seed=5), 9),  # shuffled, past an epoch
                      (make_eval_iterator, dict(bucket_boundaries=[5, 8]), None)):
    whole = make(ds, CLS, batch_size=6, **kw)
    shards = [make(ds, CLS, batch_size=6, shard_index=i, shard_count=count, **kw)
              for i in range(count)]
    ref = list(whole) if k is None else _take(whole, k)
    got = [list(s) for s in shards] if k is None else [_take(s, k) for s in shards]
    assert all(len(g) == len(ref) for g in got)  # every process steps in lockstep
    for step, batch in enumerate(ref):
      stacked = {key: np.concatenate([g[step][key] for g in got]) for key in batch}
      _assert_batches_equal([stacked], [batch])
  # The eval pass covers every example once (the last batch is partly filler).
  assert sorted(sum((_ids(b) for b in make_eval_iterator(ds, CLS, batch_size=6)), [])) == \
      list(range(23))
  # A position saved by one topology continues on another.
  one = make_iterator(ds, CLS, batch_size=6, seed=5, shard_index=count - 1,
                      shard_count=count)
  _take(one, 4)
  resumed = make_iterator(ds, CLS, batch_size=6, seed=5)
  resumed.set_state(json.loads(json.dumps(one.get_state())))
  _assert_batches_equal(_take(resumed, 3),
                        _take(make_iterator(ds, CLS, batch_size=6, seed=5), 7)[4:])


def test_bucketed_padding_and_masks():
  ds = _cls_data()
  lengths = _lengths(23)
  it = make_eval_iterator(ds, CLS, batch_size=2, bucket_boundaries=[8, 5, 30])
  widths = []
  for b in it:
    ids = _ids(b)
    longest = max(lengths[i] for i in ids)
    width = min(w for w in (5, 8, 12) if w >= longest)  # 30 > pad_to: ignored
    assert b['inputs'].shape == (2, width) and b['mask'].shape == (2, width)
    widths.append(width)
    for row, i in enumerate(ids):
      ref = np.zeros(width, np.int32)
      ref[:lengths[i]] = ds[i]['inputs']
      np.testing.assert_array_equal(b['inputs'][row], ref)
      np.testing.assert_array_equal(b['mask'][row], np.arange(width) < lengths[i])
      assert b['label'][row] == i % 3
  assert {5, 8, 12} <= set(widths)
  fixed = next(make_eval_iterator(ds, CLS, batch_size=3))
  assert fixed['inputs'].shape == (3, 12)         # default: spec.max_len


def test_filler_rows_have_zero_weight():
  ds = _cls_data(10)
  batches = list(make_eval_iterator(ds, CLS, batch_size=4))
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[-1]['example_weight'], [1, 1, 0, 0])
  last = batches[-1]
  assert last['mask'].any(axis=1).all()           # no all-padding row (no 0/0 pooling)
  assert last['example_weight'].dtype == np.float32 and last['label'].dtype == np.int32


def test_token_kind_and_prepadded_inputs():
  spec = TaskSpec('toy_lm', 'token', vocab_size=32, max_len=8)
  exs = [{'inputs': np.array([5 + i, 6, 7, 0, 0], np.int32),   # pre-padded with PAD
          'targets': np.array([6, 7, 8, 0, 0], np.int32),
          'weights': np.array([0, 1, 1, 0, 0], np.float32)} for i in range(3)]
  batch = next(make_eval_iterator(grain.MapDataset.source(exs), spec, batch_size=4))
  assert batch['inputs'].shape == batch['targets'].shape == (4, 8)
  np.testing.assert_array_equal(batch['mask'][0], np.arange(8) < 3)
  np.testing.assert_array_equal(batch['targets'][1], [6, 7, 8, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch['weights'][:3], np.tile([0, 1, 1, 0, 0, 0, 0, 0],
                                                              (3, 1)))
  np.testing.assert_array_equal(batch['weights'][3], np.zeros(8))  # filler scores nothing
  assert batch['weights'].dtype == np.float32 and batch['targets'].dtype == np.int32


def test_seq2seq_decoder_inputs():
  spec = TaskSpec('toy_s2s', 'seq2seq', vocab_size=20, tgt_vocab_size=20, max_len=6,
                  max_target_len=5)
  exs = [{'inputs': np.array([4, 5, 6], np.int32), 'targets': np.array([7, 8, EOS_ID],
                                                                       np.int32)},
         {'inputs': np.array([9], np.int32), 'targets': np.array([10, EOS_ID], np.int32)},
         # Pre-padded target: PAD after EOS is not a target token.
         {'inputs': np.array([9, 9], np.int32),
          'targets': np.array([11, EOS_ID, 0, 0], np.int32)}]
  b = next(make_eval_iterator(grain.MapDataset.source(exs), spec, batch_size=3))
  np.testing.assert_array_equal(b['targets'], [[7, 8, 3, 0, 0], [10, 3, 0, 0, 0],
                                               [11, 3, 0, 0, 0]])
  np.testing.assert_array_equal(b['decoder_inputs'], [[BOS_ID, 7, 8, 3, 0],
                                                      [BOS_ID, 10, 3, 0, 0],
                                                      [BOS_ID, 11, 3, 0, 0]])
  np.testing.assert_array_equal(b['weights'], [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0],
                                               [1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(b['mask'], np.arange(6)[None] < np.array([[3], [1], [2]]))


def test_float_inputs_and_regression_labels():
  spec = TaskSpec('toy_reg', 'regression', vocab_size=0, input_features=2, num_classes=1,
                  max_len=5)
  exs = [{'inputs': np.full((3 + i, 2), 0.5 * i, np.float32), 'label': np.float32(i)}
         for i in range(3)]
  b = next(make_eval_iterator(grain.MapDataset.source(exs), spec, batch_size=3))
  assert b['inputs'].shape == (3, 5, 2) and b['inputs'].dtype == np.float32
  np.testing.assert_array_equal(b['mask'], np.arange(5)[None] < np.array([[3], [4], [5]]))
  np.testing.assert_array_equal(b['label'], [0, 1, 2])
  assert b['label'].dtype == np.float32


def test_errors():
  ds = _cls_data()
  short = TaskSpec('toy_cls', 'classification', vocab_size=64, num_classes=3, max_len=5)
  with pytest.raises(DataError, match='example 1 has 8 input positions'):
    list(make_eval_iterator(ds, short, batch_size=2))
  it = make_iterator(ds, CLS, batch_size=4, seed=0)
  other = make_iterator(ds, CLS, batch_size=4, seed=1)
  with pytest.raises(ValueError, match='seed=0'):
    other.set_state(it.get_state())
  with pytest.raises(ValueError, match='shard_index'):
    make_iterator(ds, CLS, batch_size=4, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match='divisible by shard_count=3'):
    make_iterator(ds, CLS, batch_size=4, seed=0, shard_index=0, shard_count=3)
  with pytest.raises(ValueError, match='batch_size'):
    BatchIterator(ds, CLS, batch_size=0, seed=0, shuffle=True, num_epochs=None,
                  drop_remainder=True, pad_to=None, bucket_boundaries=None, shard_index=0,
                  shard_count=1)


def test_token_scored_positions_are_never_cut():
  spec = TaskSpec('toy_lm', 'token', vocab_size=32, max_len=6)
  exs = [{'inputs': np.array([5, 6, 0, 0], np.int32), 'targets': np.array([6, 7, 8, 9],
                                                                          np.int32),
          'weights': np.array([0, 1, 1, 1], np.float32)}]
  b = next(make_eval_iterator(grain.MapDataset.source(exs), spec, batch_size=1,
                              bucket_boundaries=[2, 4]))
  assert b['inputs'].shape == (1, 4)
  np.testing.assert_array_equal(b['targets'][0], [6, 7, 8, 9])
  np.testing.assert_array_equal(b['weights'][0], [0, 1, 1, 1])
  np.testing.assert_array_equal(b['mask'][0], [True] * 4)
