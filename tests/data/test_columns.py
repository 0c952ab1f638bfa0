"""Splits held as columns batch to exactly the arrays of the per-example path."""

from __future__ import annotations

import itertools

import grain
import numpy as np
import pytest

from seqjax.data import columns
from seqjax.data.errors import DataError
from seqjax.data.pipeline import make_eval_iterator, make_iterator
from seqjax.data.spec import PAD_ID, TaskSpec

TOKEN = TaskSpec('toy_token', 'token', vocab_size=16, max_len=12)
CLS = TaskSpec('toy_cls', 'classification', vocab_size=16, num_classes=3, max_len=12)
REG = TaskSpec('toy_reg', 'regression', vocab_size=0, num_classes=1, input_features=2,
               max_len=12)


def _examples(kind: str, n: int = 29, stored_len: int = 10) -> list[dict]:
  """``n`` examples stored ``stored_len`` wide with right padding of varying length; the
  token kind also scores positions past the last real input token."""
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    length = 1 + (5 * i) % stored_len
    if kind == 'regression':
      x = rng.normal(size=(stored_len, 2)).astype(np.float32)
      out.append({'inputs': x, 'label': np.float32(x.sum())})
      continue
    ids = np.zeros(stored_len, np.int64)
    ids[:length] = rng.integers(1, 16, length)
    ids[rng.integers(0, length)] = PAD_ID      # a PAD inside the real part
    ex = {'inputs': ids}
    if kind == 'token':
      weights = np.zeros(stored_len, np.float32)
      weights[min(stored_len - 1, length + i % 3)] = 0.5  # may lie beyond the inputs
      ex.update(targets=rng.integers(1, 16, stored_len).astype(np.int32), weights=weights)
    else:
      ex['label'] = np.int64(i % 3)
    out.append(ex)
  return out


def _assert_same_batches(a, b, count=40):
  pairs = list(itertools.islice(zip(a, b), count))
  assert pairs
  for x, y in pairs:
    assert list(x) == list(y)
    for key in x:
      assert x[key].dtype == y[key].dtype, key
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize('spec,pad_to,bounds', [
    (TOKEN, None, None), (TOKEN, 10, (4, 8)), (CLS, None, None), (CLS, 12, (3, 6)),
    (REG, None, None)], ids=['token', 'token-buckets', 'cls', 'cls-buckets', 'features'])
@pytest.mark.parametrize('shards', [1, 2])
def test_column_batches_equal_per_example_batches(spec, pad_to, bounds, shards):
  examples = _examples(spec.kind)
  held = columns.in_memory(examples)
  plain = grain.MapDataset.source(examples)
  assert columns.columns_of(held) is not None and columns.columns_of(plain) is None
  for shard in range(shards):
    kw = dict(pad_to=pad_to, bucket_boundaries=bounds, shard_index=shard,
              shard_count=shards)
    # Training order over epochs with filler rows, and the evaluation pass.
    fast = make_iterator(held, spec, batch_size=6, seed=4, drop_remainder=False, **kw)
    # Sharded buckets need the other shards' lengths: that case keeps the other path.
    assert (fast._columns is not None) == (shards == 1 or not bounds)
    _assert_same_batches(
        fast, make_iterator(plain, spec, batch_size=6, seed=4, drop_remainder=False, **kw))
    _assert_same_batches(make_eval_iterator(held, spec, batch_size=8, **kw),
                         make_eval_iterator(plain, spec, batch_size=8, **kw))


def test_too_long_example_is_named_as_on_the_per_example_path():
  examples = _examples('token')
  errors = []
  for dataset in (columns.in_memory(examples), grain.MapDataset.source(examples)):
    with pytest.raises(DataError) as info:
      list(make_eval_iterator(dataset, TOKEN, batch_size=8, pad_to=4))
    errors.append(str(info.value))
  assert errors[0] == errors[1] and 'example' in errors[0]


def test_ragged_examples_stay_a_list_and_columns_are_read_only():
  ragged = [{'inputs': np.ones(n, np.int32), 'label': np.int32(0)} for n in (3, 5)]
  assert columns.columns_of(columns.in_memory(ragged)) is None
  held = columns.columns_of(columns.in_memory(_examples('classification')))
  with pytest.raises(ValueError):
    held.arrays['inputs'][0, 0] = 1
