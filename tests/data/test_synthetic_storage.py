"""Synthetic tasks on disk: array_record files, TFDS read-back, reuse, option errors."""

from __future__ import annotations

import json
import os
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader

from seqjax.data import synthetic
from seqjax.data.synthetic import TASKS
from seqjax.data.synthetic import base as synthetic_base

SIZES = {'num_train': 20, 'num_validation': 6, 'num_test': 8}
SMALL = {'num_tokens': 3, 'delay': 4, 'num_symbols': 4}


def _files(root: pathlib.Path) -> dict[pathlib.Path, int]:
  return {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()}


def test_files_are_array_record_and_read_back_through_tfds(tmp_path):
  task = TASKS['copying'](data_dir=tmp_path, seed=1, **SIZES, **SMALL)
  opened = task.open('train')
  version_dir, = tmp_path.glob('seqjax_copying/*/1.0.0')
  # The options are spelled out in the config directory name.
  assert 'num_tokens3' in version_dir.parent.name and 'seed1' in version_dir.parent.name
  info = json.loads((version_dir / 'dataset_info.json').read_text())
  assert info['fileFormat'] == 'array_record'
  for split, size in (('train', 20), ('validation', 6), ('test', 8)):
    shards = sorted(version_dir.glob(f'seqjax_copying-{split}.array_record-*'))
    assert shards
    # Read the raw records with the array_record library itself (not through TFDS).
    count = 0
    for shard in shards:
      reader = ArrayRecordReader(str(shard))
      count += reader.num_records()
      reader.close()
    assert count == size
  # tfds.data_source by name, independent of the Task object, gives the same examples.
  source = tfds.data_source(task.metadata['tfds_name'], split='train', data_dir=tmp_path,
                            download=False)
  assert len(source) == len(opened) == 20
  for i in range(len(source)):
    for key in ('inputs', 'targets', 'weights'):
      np.testing.assert_array_equal(np.asarray(source[i][key]), opened[i][key])


def test_small_splits_are_decoded_once_and_large_ones_stay_on_disk(tmp_path, monkeypatch):
  """A split that fits ``IN_MEMORY_BYTES`` is decoded from its files on the first open
  only: later opens, and other processes (a pickled task, as a worker gets it), load the
  decoded copy saved beside the files, with the same examples as the files hold. A
  damaged copy is decoded again; a larger split is read from the files at every open."""
  base = synthetic_base
  reads = []
  original = base.SyntheticBuilder.as_data_source

  def counting(self, split, *args, **kwargs):
    reads.append(split)
    return original(self, split, *args, **kwargs)

  monkeypatch.setattr(base.SyntheticBuilder, 'as_data_source', counting)
  task = TASKS['copying'](data_dir=tmp_path, seed=2, **SIZES, **SMALL)
  first = [task.open('train')[i] for i in range(SIZES['num_train'])]
  again = [task.open('train')[i] for i in range(SIZES['num_train'])]
  assert reads == ['train']
  clone = pickle.loads(pickle.dumps(task))
  from_copy = [clone.open('train')[i] for i in range(SIZES['num_train'])]
  assert reads == ['train']
  source = tfds.data_source(task.metadata['tfds_name'], split='train', data_dir=tmp_path,
                            download=False)
  for i, (a, b, c) in enumerate(zip(first, again, from_copy)):
    assert a.keys() == b.keys() == c.keys() == {'inputs', 'targets', 'weights'}
    for key in a:
      np.testing.assert_array_equal(np.asarray(source[i][key]), a[key])
      assert a[key].dtype == b[key].dtype == c[key].dtype
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])

  copy, = tmp_path.glob('seqjax_copying/*/1.0.0/decoded-train.npz')
  copy.write_bytes(copy.read_bytes()[:40])  # truncated
  damaged = pickle.loads(pickle.dumps(task))
  for i, example in enumerate(damaged.open('train')):
    np.testing.assert_array_equal(example['inputs'], first[i]['inputs'])
  assert reads == ['train', 'train']

  monkeypatch.setattr(base, 'IN_MEMORY_BYTES', 1)  # every split is now "too large"
  task = TASKS['copying'](data_dir=tmp_path, seed=3, **SIZES, **SMALL)
  task.open('test'), task.open('test')
  assert reads[2:] == ['test', 'test']
  assert not list(tmp_path.glob('seqjax_copying/*seed3/1.0.0/decoded-*'))


def test_second_factory_call_reuses_prepared_data(tmp_path, monkeypatch):
  TASKS['adding'](data_dir=tmp_path, seq_len=10, **SIZES).open('train')
  first = TASKS['adding'](data_dir=tmp_path, seq_len=10, **SIZES).open('test')[0]
  before = _files(tmp_path)

  def fail(*args, **kwargs):
    raise AssertionError('data was generated again')

  monkeypatch.setattr(synthetic.SeqjaxAdding, '_generate_examples', fail)
  task = TASKS['adding'](data_dir=tmp_path, seq_len=10, **SIZES)
  again = task.open('test')[0]
  assert _files(tmp_path) == before
  np.testing.assert_array_equal(first['inputs'], again['inputs'])
  # Different options land in a different config directory (and are generated anew).
  monkeypatch.undo()
  TASKS['adding'](data_dir=tmp_path, seq_len=12, **SIZES).open('train')
  assert len(list(tmp_path.glob('seqjax_adding/*/1.0.0'))) == 2


def test_data_dir_falls_back_to_environment(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path / 'env'))
  task = TASKS['induction_heads'](seq_len=6, num_symbols=3, **SIZES)
  assert not (tmp_path / 'env').exists()  # the factory alone writes nothing
  task.open('test')
  assert list((tmp_path / 'env').glob('seqjax_induction_heads/*/1.0.0/*.array_record-*'))
  assert synthetic.default_data_dir(tmp_path / 'arg') == str(tmp_path / 'arg')
  monkeypatch.delenv('SEQJAX_DATA_DIR')
  assert synthetic.default_data_dir() == os.path.expanduser(
      '~/.cache/seqjax/tensorflow_datasets')


@pytest.mark.parametrize('name, options, match', [
    ('copying', {'lenght': 5}, r"unknown option 'lenght'; valid options: \[.*'delay'"),
    ('copying', {'num_tokens': -1}, r'num_tokens=-1 must be >= 1'),
    ('copying', {'delay': 2.5}, r'delay=2.5 must be an integer'),
    ('selective_copying', {'seq_len': 4, 'num_tokens': 5},
     r'num_tokens=5 must be <= seq_len=4'),
    ('adding', {'seq_len': 1}, r'seq_len=1 must be >= 2'),
    ('adding', {'num_train': 0}, r'num_train=0 must be >= 1'),
    ('associative_recall', {'num_pairs': 9, 'num_keys': 8},
     r'num_pairs=9 must be <= num_keys=8'),
    ('mqar', {'num_queries': 9, 'num_pairs': 8}, r'num_queries=9 must be <= num_pairs=8'),
    ('mqar', {'seq_len': 20}, r'seq_len=20 must be >= 2 \* num_pairs \+ num_queries = 24'),
    ('induction_heads', {'seq_len': True}, r'seq_len=True must be an integer'),
    ('listops', {'min_len': 50, 'max_len': 40}, r'min_len=50 must be <= max_len=40'),
    ('listops', {'op_prob': 1.5}, r'op_prob=1.5 must be in \[0.0, 1.0\]'),
    ('toy_translation', {'variant': 'french'}, r"variant='french' must be one of"),
    ('toy_translation', {'seq_len': 9}, r"'seq_len' only applies to variant='reverse'"),
    ('toy_translation', {'min_year': 2000, 'max_year': 1999}, r'min_year=2000 must be <='),
])
def test_bad_options_raise_one_line_value_errors(name, options, match):
  with pytest.raises(ValueError, match=match) as error:
    TASKS[name](**options)
  assert '\n' not in str(error.value) and repr(name) in str(error.value)


def test_bad_seed_and_split(tmp_path):
  with pytest.raises(ValueError, match='seed=-1 must be an integer >= 0'):
    TASKS['copying'](seed=-1)
  task = TASKS['copying'](data_dir=tmp_path, **SIZES, **SMALL)
  with pytest.raises(ValueError, match="no split 'dev'"):
    task.open('dev')


def test_unreachable_listops_length_is_reported(tmp_path):
  task = TASKS['listops'](data_dir=tmp_path, max_depth=1, max_args=2, min_len=6, max_len=8,
                          **SIZES)
  with pytest.raises(ValueError, match=r'no expression of length in \[6, 8\]'):
    task.open('train')


def test_chunked_generation_covers_every_example(tmp_path, monkeypatch):
  monkeypatch.setattr(synthetic.base, 'GENERATION_CHUNK', 7)  # 20 = 7 + 7 + 6
  ds = TASKS['selective_copying'](data_dir=tmp_path, seq_len=12, num_tokens=4,
                                  **SIZES).open('train')
  rows = {tuple(ds[i]['inputs'].tolist()) for i in range(len(ds))}
  assert len(ds) == 20 and len(rows) == 20  # no chunk repeats another's random stream


def test_a_process_that_waited_for_another_preparation_opens_its_files(tmp_path,
                                                                       monkeypatch):
  """Two preparers of one dataset: the second makes its builder before the files exist,
  waits for the first's lock, and must then read the prepared files (TFDS's stale builder
  said 'splits is empty')."""
  import fcntl
  import threading
  from seqjax.data.synthetic import base
  task = TASKS['copying'](data_dir=tmp_path, seed=2, **SIZES, **SMALL)
  opener = task.open
  config_dir = pathlib.Path(os.fspath(opener._new_builder().data_dir)).parent
  config_dir.mkdir(parents=True)
  waiting, real_flock = threading.Event(), fcntl.flock

  def flock(fd, op):  # the second preparer reaches the lock: let the first write
    waiting.set()
    return real_flock(fd, op)

  got = {}
  with open(f'{config_dir}.lock', 'w') as first:
    real_flock(first, fcntl.LOCK_EX)
    monkeypatch.setattr(base.fcntl, 'flock', flock)
    second = threading.Thread(target=lambda: got.update(n=len(task.dataset('train'))))
    second.start()
    assert waiting.wait(60)
    opener._new_builder().download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    real_flock(first, fcntl.LOCK_UN)
  second.join(60)
  assert got == {'n': SIZES['num_train']}
