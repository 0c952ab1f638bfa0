"""Real TFDS tasks through ``tfds.testing.mock_data`` (offline), and the not-prepared error."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seqjax.data import real
from seqjax.data import tokenizers as tok
from seqjax.data.errors import DataError, DatasetNotPreparedError
from seqjax.data.pipeline import make_iterator
from seqjax.data.registry import get_task
from seqjax.data.spec import EOS_ID

N = 12  # mocked examples per split
OPTIONS = {'tiny_shakespeare': {'seq_len': 4}}
PAIRS = {'glue/mrpc': ('sentence1', 'sentence2'), 'glue/qnli': ('question', 'sentence'),
         'glue/rte': ('sentence1', 'sentence2'), 'glue/stsb': ('sentence1', 'sentence2'),
         'glue/mnli': ('premise', 'hypothesis')}
TFDS_NAME = {'imdb_bytes': 'imdb_reviews/plain_text', 'imdb_words': 'imdb_reviews/plain_text',
             'tiny_shakespeare': 'tiny_shakespeare', 'smnist': 'mnist', 'psmnist': 'mnist',
             'scifar': 'cifar10', 'retrieval': 'seqjax_lra_retrieval'}
# Retrieval reads TSVs from manual_dir: tests/data/test_prepare.py writes some and prepares
# it for real, which checks more than TFDS's random mock examples could.
MOCKED = sorted(set(real.TASKS) - {'retrieval'})


def _tfds_name(name):
  return TFDS_NAME.get(name, name)


@pytest.fixture
def mocked():
  with tfds.testing.mock_data(num_examples=N):
    yield


def _check_format(spec, ex):
  x = ex['inputs']
  if spec.input_features:
    assert x.dtype == np.float32 and x.shape == (spec.max_len, spec.input_features)
    assert 0.0 <= x.min() and x.max() <= 1.0
  else:
    assert x.dtype == np.int32 and x.ndim == 1 and 1 <= len(x) <= spec.max_len
    assert x.min() >= 1 and x.max() < spec.vocab_size  # no PAD inside real tokens
  if spec.kind == 'classification':
    assert ex['label'].dtype == np.int32 and ex['label'].shape == ()
    assert 0 <= ex['label'] < spec.num_classes
  elif spec.kind == 'regression':  # STS-B: a similarity score
    assert ex['label'].dtype == np.float32 and ex['label'].shape == ()
  else:
    assert spec.kind == 'token'
    assert ex['targets'].dtype == np.int32 and ex['targets'].shape == x.shape
    np.testing.assert_array_equal(ex['weights'], np.ones(len(x), np.float32))


@pytest.mark.parametrize('name', MOCKED)
def test_every_task_loads_through_mock_data(mocked, name, tmp_path):
  task = get_task(name, data_dir=str(tmp_path), **OPTIONS.get(name, {}))
  assert task.spec.name == name and task.spec.splits == ('train', 'validation', 'test')
  sizes = {}
  for split in task.spec.splits:
    ds = task.dataset(split)
    sizes[split] = len(ds)
    for i in range(min(len(ds), 3)):
      _check_format(task.spec, ds[i])
  if name != 'tiny_shakespeare':
    # Validation is carved from train by seed; test is the held-out TFDS split.
    assert sizes['train'] + sizes['validation'] == N and sizes['validation'] >= 1
    opener = task.open
    train = opener.source('train').indices
    val = opener.source('validation').indices
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(N))
    other = get_task(name, data_dir=str(tmp_path), seed=1, **OPTIONS.get(name, {}))
    assert {tuple(task.open.source('validation').indices)} != {
        tuple(other.open.source('validation').indices)} or N < 3
  # A batch comes out of the pipeline in the trainer's shapes.
  batch = next(make_iterator(task.dataset('train'), task.spec, batch_size=2, seed=0))
  assert batch['inputs'].shape[:2] == (2, task.spec.max_len)
  assert batch['mask'].shape == (2, task.spec.max_len)


@pytest.mark.parametrize('name,test_split', [
    ('imdb_bytes', 'test'), ('imdb_words', 'test'), ('glue/sst2', 'validation'),
    ('glue/mrpc', 'validation'), ('glue/qnli', 'validation'), ('glue/stsb', 'validation'),
    ('glue/mnli', 'validation_mismatched')])
def test_text_matches_raw_examples(mocked, name, test_split, tmp_path):
  options = {'test_split': test_split} if name == 'glue/mnli' else {}
  task = get_task(name, data_dir=str(tmp_path), **options)
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  assert t.vocab_size == task.spec.vocab_size
  raw = tfds.data_source(_tfds_name(name), split=test_split, data_dir=str(tmp_path))
  test = task.dataset('test')
  fields = PAIRS.get(name, ('text',) if name.startswith('imdb') else ('sentence',))
  for i in range(4):
    parts = [t.encode(str(raw[i][f])) for f in fields]
    ref = parts[0] if len(parts) == 1 else np.concatenate([parts[0], [EOS_ID], parts[1]])
    np.testing.assert_array_equal(test[i]['inputs'], ref)
    assert test[i]['label'] == raw[i]['label']
  if name == 'imdb_bytes':
    assert t.decode(test[0]['inputs']) == str(raw[0]['text'])
  # Word vocabularies come from our train split only (validation carved out of it).
  if t.kind == 'word':
    src = task.open.source('train')
    train_words = {w for j in range(len(src)) for f in fields
                   for w in t.split(str(src[j][f]))}
    assert set(t.vocab) <= train_words
    # A saved tokenizer rebuilds the same task (what evaluation after training does).
    again = get_task(name, data_dir=str(tmp_path), tokenizer=task.metadata['tokenizer'],
                     **options)
    np.testing.assert_array_equal(again.dataset('test')[0]['inputs'], test[0]['inputs'])


def test_truncation(mocked, tmp_path):
  full = get_task('imdb_bytes', data_dir=str(tmp_path)).dataset('test')
  short = get_task('imdb_bytes', data_dir=str(tmp_path), max_len=5).dataset('test')
  for i in range(3):
    np.testing.assert_array_equal(short[i]['inputs'], full[i]['inputs'][:5])
  strict = get_task('imdb_bytes', data_dir=str(tmp_path), max_len=5, truncate=False)
  with pytest.raises(DataError, match=r"example 0 has \d+ tokens, more than max_len=5"):
    strict.dataset('test')[0]


def test_tiny_shakespeare_windows(mocked, tmp_path):
  task = get_task('tiny_shakespeare', data_dir=str(tmp_path), seq_len=4)
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  raw = tfds.data_source('tiny_shakespeare', split='train', data_dir=str(tmp_path))
  text = ''.join(str(raw[i]['text']) for i in range(len(raw)))
  ds = task.dataset('train')
  assert len(ds) == (len(text) - 1) // 4
  for i in (0, 1, len(ds) - 1):
    ex = ds[i]
    assert t.decode(ex['inputs']) == text[4 * i:4 * i + 4]
    assert t.decode(ex['targets']) == text[4 * i + 1:4 * i + 5]  # next character


def test_pixel_tasks(mocked, tmp_path):
  raw = tfds.data_source('mnist', split='test', data_dir=str(tmp_path))
  s = get_task('smnist', data_dir=str(tmp_path)).dataset('test')
  p = get_task('psmnist', data_dir=str(tmp_path)).dataset('test')
  p_again = get_task('psmnist', data_dir=str(tmp_path), seed=7).dataset('test')
  p_other = get_task('psmnist', data_dir=str(tmp_path), permutation_seed=1).dataset('test')
  perm = np.random.default_rng(0).permutation(784)
  for i in range(3):
    ref = raw[i]['image'].astype(np.float64).reshape(784, 1) / 255.0
    np.testing.assert_allclose(s[i]['inputs'], ref, atol=1e-7)
    np.testing.assert_allclose(p[i]['inputs'], ref[perm], atol=1e-7)
    np.testing.assert_array_equal(p_again[i]['inputs'], p[i]['inputs'])  # fixed perm
  assert not np.array_equal(p_other[0]['inputs'], p[0]['inputs'])
  craw = tfds.data_source('cifar10', split='test', data_dir=str(tmp_path))
  c = get_task('scifar', data_dir=str(tmp_path)).dataset('test')
  g = get_task('scifar', data_dir=str(tmp_path), grayscale=True)
  assert g.spec.input_features == 1
  ref = craw[0]['image'].astype(np.float64).reshape(1024, 3) / 255.0
  np.testing.assert_allclose(c[0]['inputs'], ref, atol=1e-7)
  np.testing.assert_allclose(g.dataset('test')[0]['inputs'][:, 0],
                             ref @ [0.299, 0.587, 0.114], atol=1e-6)


def test_glue_metrics():
  """Each GLUE task reports the metrics of Wang et al. (2019), table 1."""
  glue = {'glue/cola': ('mcc',), 'glue/sst2': ('accuracy',), 'glue/mrpc': ('f1', 'accuracy'),
          'glue/qqp': ('f1', 'accuracy'), 'glue/stsb': ('pearson', 'spearman'),
          'glue/mnli': ('accuracy',), 'glue/qnli': ('accuracy',), 'glue/rte': ('accuracy',),
          'glue/wnli': ('accuracy',)}
  assert {n for n in real.TASKS if n.startswith('glue/')} == set(glue)
  with tfds.testing.mock_data(num_examples=4):
    specs = {n: get_task(n).spec for n in glue}
  for name, metrics in glue.items():
    assert set(metrics) <= set(specs[name].metrics), name
    assert specs[name].eval_metric == metrics[0] and specs[name].eval_metric_larger_is_better
  assert specs['glue/stsb'].kind == 'regression' and specs['glue/mnli'].num_classes == 3
  assert 'accuracy' not in specs['glue/cola'].metrics


def test_not_prepared_is_fast_and_offline(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(socket.socket, 'connect', no_network)
  monkeypatch.setattr(socket, 'create_connection', no_network)
  start = time.perf_counter()
  for name in sorted(real.TASKS):
    with pytest.raises(DatasetNotPreparedError) as err:
      get_task(name, data_dir=str(tmp_path), **OPTIONS.get(name, {}))
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and '\n' not in msg
    assert repr(_tfds_name(name)) in msg and str(tmp_path) in msg
    assert 'scripts.prepare_data' in msg and '--data_dir' in msg
  assert time.perf_counter() - start < 20


def test_bad_options(mocked):
  with pytest.raises(ValueError, match="unknown option 'max_length'"):
    get_task('imdb_bytes', max_length=3)
  with pytest.raises(ValueError, match="tokenizer='bpe'"):
    get_task('glue/sst2', tokenizer='bpe')
  with pytest.raises(ValueError, match='validation_fraction'):
    get_task('smnist', validation_fraction=1.5)


class SeqjaxTestTinyReviews(tfds.core.GeneratorBasedBuilder):
  """A six-review text dataset prepared for real (array_record) to test the unmocked path."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = None  # nothing downloaded: no checksums file to look for

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'text': tfds.features.Text(), 'label': tfds.features.ClassLabel(num_classes=2)}),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 10), 'test': self._generate_examples(10, 4)}

  def _generate_examples(self, start, n):
    for i in range(start, start + n):
      yield i, {'text': f'Review {i}: {"good" if i % 2 else "bad"} film ☺', 'label': i % 2}


def test_prepared_array_record_dataset(tmp_path):
  """The unmocked route: a really prepared dataset, texts decoded from stored bytes."""
  builder = SeqjaxTestTinyReviews(data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  factory = real._text_factory('tiny_reviews', 'seqjax_test_tiny_reviews', ('text',), 2,
                               'test', {'tokenizer': 'word', 'max_len': 8}, ('accuracy',),
                               'accuracy', 'test task')
  task = factory(data_dir=str(tmp_path), seed=0)
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  test = task.dataset('test')
  assert len(test) == 4 and len(task.dataset('train')) + len(task.dataset('validation')) == 10
  for j in range(4):
    i = 10 + j
    ref = t.encode(f'Review {i}: {"good" if i % 2 else "bad"} film ☺')
    np.testing.assert_array_equal(test[j]['inputs'], ref)
    assert test[j]['label'] == i % 2
  assert '14' not in t.vocab and 'review' in t.vocab  # vocabulary from train only
  with pytest.raises(DatasetNotPreparedError, match='seqjax_test_tiny_reviews'):
    factory(data_dir=str(tmp_path / 'elsewhere'))
