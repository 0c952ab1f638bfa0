"""Reliability drills that need no training run: one line for every failure (full disk,
config files, CSV rows, exit codes, NaN messages), checksums that catch what Orbax restores
silently, and the leftovers of an interrupted dataset preparation. The drills with real
trainers, signals and checkpoint damage are in ``test_drills.py``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import cli, config_files
from seqjax.training import integrity
from seqjax.training.checkpointing import Checkpointer
from seqjax.training.errors import (DamagedCheckpointError, EnvironmentFailure,
                                    NonFiniteLossError, UserError)

pytestmark = pytest.mark.drill


def test_a_full_disk_under_metrics_jsonl_is_one_line_naming_it(tmp_path):
  """``/dev/full`` fails every write with ENOSPC, as a full disk does; Python's error from
  ``flush`` names no file, the writer's does."""
  from seqjax.training.metrics_writer import JSONL, MetricsWriter
  writer = MetricsWriter(str(tmp_path), tensorboard=False)
  writer.write(1, 'train', {'loss': 1.0})
  path = tmp_path / JSONL
  path.unlink()
  path.symlink_to('/dev/full')
  writer._file.close()  # pylint: disable=protected-access
  writer._file = open(path, 'a')  # pylint: disable=protected-access
  with pytest.raises(OSError) as err:
    writer.write(2, 'train', {'loss': 1.0})
  assert cli.classify(err.value) == (3, f'No space left on device ({path})')
  with pytest.raises(OSError, match=re.escape(str(path))):
    writer.close()  # the line still buffered fails again, named again


def test_checksums_catch_what_orbax_restores_silently(tmp_path):
  from seqjax.training.state import TrainState
  import orbax.checkpoint as ocp
  rng = np.random.default_rng(0)
  w = rng.normal(size=64).astype(np.float32)
  bits = rng.integers(0, 2**32, size=4096, dtype=np.uint32)  # incompressible: stored as is

  def state(w):
    return TrainState(step=jax.numpy.asarray(1), params={'w': w, 'bits': bits},
                      opt_state={}, rng=jax.random.PRNGKey(0))

  ck = Checkpointer(str(tmp_path), keep=5, async_save=False)
  ck.save(1, state(w), {'batch': 1}, {'m': 1})
  ck.save(2, state(w + 1), {'batch': 2}, {'m': 2})
  nan = w.copy()
  nan[7] = np.nan
  ck.save(3, state(nan), {'batch': 3}, {'m': 3})  # checksums match: saved that way
  ck.wait()
  # Flip one bit inside the stored integers of step 2.
  needle = bits.tobytes()[400:416]
  files = [p for p in (tmp_path / '2' / 'params').rglob('*') if p.is_file()
           and needle in p.read_bytes()]
  assert len(files) == 1
  data = bytearray(files[0].read_bytes())
  data[data.index(needle) + 2] ^= 0x40
  files[0].write_bytes(bytes(data))
  abstract = {'w': jax.ShapeDtypeStruct(w.shape, w.dtype),
              'bits': jax.ShapeDtypeStruct(bits.shape, bits.dtype)}
  raw = ck.manager.restore(2, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract)))['params']
  assert np.sum(np.asarray(raw['bits']) != bits) == 1  # Orbax alone: no error, one wrong value
  with pytest.raises(DamagedCheckpointError,
                     match=re.escape("params: checksum mismatch in ['bits']")):
    ck.restore(2, abstract)
  with pytest.raises(DamagedCheckpointError, match=re.escape("params: NaN/Inf in ['w']")):
    ck.restore(3, abstract)
  step, got, refused = ck.restore_first_good([3, 2, 1], abstract)
  assert step == 1 and [s for s, _ in refused] == [3, 2]
  np.testing.assert_array_equal(got['params']['w'], w)
  (tmp_path / '1.corrupt').mkdir()  # an older quarantine
  os.utime(tmp_path / '1.corrupt', (0, 0))
  kept = ck.quarantine([3, 2])
  assert ck.all_steps() == [1] and kept.startswith('2.corrupt is kept')
  assert sorted(p.name for p in tmp_path.glob('*.corrupt')) == ['2.corrupt']
  ck.close()


def test_fingerprint_matches_a_numpy_reference():
  x = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
  words = x.view(np.uint32).reshape(-1).astype(np.uint64)
  i = np.arange(words.size, dtype=np.uint64)
  m = np.uint64(0xFFFFFFFF)
  s1 = int(((2 * i + 1) * words & m).sum() & m)
  h = (words ^ (i * np.uint64(0x9E3779B9) & m)) & m
  h ^= h >> np.uint64(16)
  h = h * np.uint64(0x85EBCA6B) & m
  h ^= h >> np.uint64(13)
  h = h * np.uint64(0xC2B2AE35) & m
  h ^= h >> np.uint64(16)
  s2 = int(h.sum() & m)
  assert integrity.fingerprint({'x': x}) == {"['x']": f'{s1:08x}{s2:08x}'}


def test_leftovers_of_an_interrupted_dataset_preparation_are_removed(tmp_path):
  from seqjax.data.registry import get_task
  task = get_task('copying', data_dir=str(tmp_path), num_train=32, num_validation=8,
                  num_test=8)
  config_dir = Path(tmp_path, task.metadata['tfds_name'].replace('/', os.sep))
  leftover = config_dir / 'incomplete.ABCDEF_1.0.0'
  leftover.mkdir(parents=True)
  (leftover / 'copying-train.array_record-00000-of-00001').write_bytes(b'\0' * 100)
  assert len(task.dataset('train')) == 32
  assert not list(config_dir.glob('incomplete.*'))


@pytest.mark.parametrize('source,needle', [
    (None, 'no such file'),
    ('def get_config(:\n', 'line 1: invalid syntax'),
    ('x = 1\n', 'defines no get_config()'),
    ('def get_config():\n  raise RuntimeError("boom")\n',
     'raised RuntimeError: boom (line 2)'),
    ('def get_config():\n  return 3\n', 'returned int, not an ml_collections.ConfigDict'),
])
def test_config_file_mistakes_are_one_line(source, needle, tmp_path):
  path = tmp_path / 'cfg.py'
  if source is not None:
    path.write_text(source)
  with pytest.raises(UserError, match=re.escape(needle)) as err:
    config_files.load_config_file(str(path))
  assert '\n' not in str(err.value)
  with pytest.raises(UserError, match='is a directory'):
    config_files.load_config_file(str(tmp_path))


def test_csv_errors_name_the_row(tmp_path):
  from seqjax.data.errors import DataError
  from seqjax.data.registry import get_task
  rows = [f'some words {i},{"pos" if i % 2 else "neg"}' for i in range(2, 61)]
  rows[51 - 2] = 'some words 51,'
  path = tmp_path / 'reviews.csv'
  path.write_text('text,label\n' + '\n'.join(rows) + '\n')
  for options in ({}, {'num_classes': 2}):
    with pytest.raises(DataError, match=r'line 51: the label \(column 1\) is empty'):
      get_task('csv', path=str(path), **options)


def test_exit_codes_and_nan_messages(tmp_path):
  from seqjax.data.errors import DataError
  from seqjax.training.loop import _non_finite_error
  cases = [(UserError('x'), 1), (DataError('x'), 1), (NonFiniteLossError('x'), 2),
           (EnvironmentFailure('x'), 3), (OSError(28, 'No space left on device', '/w'), 3),
           (RuntimeError('x'), 4), (ValueError('x'), 4)]
  assert [cli.classify(err)[0] for err, _ in cases] == [code for _, code in cases]
  assert cli.classify(cases[4][0])[1] == 'No space left on device (/w)'
  ck = Checkpointer(str(tmp_path), async_save=False)
  step = {'loss_sum': np.float32(2.0e12), 'weight': np.float32(4.0), 'correct': 0.0,
          'seq_correct': 0.0, 'seqs': 1.0, 'grad_norm': np.float32(np.inf), 'lr': 1e-3}
  message = str(_non_finite_error('token', 2, step, ck))
  assert message.startswith('the gradient norm became inf at step 2 (loss 5e+11)')
  assert 'no checkpoint was saved yet' in message and 'None' not in message
  step.update(loss_sum=np.float32(np.nan), grad_norm=np.float32(np.nan))
  assert str(_non_finite_error('token', 3, step, ck)).startswith(
      'the loss became nan at step 3')
  ck.close()
