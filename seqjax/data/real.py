"""Prepared TFDS datasets as tasks: ``TASKS = {name: factory}``.

``TASKS[name](data_dir=None, seed=0, **options) -> seqjax.data.registry.Task``.

==================  ==============  ========================================================
name                kind            data
==================  ==============  ========================================================
imdb_bytes          classification  imdb_reviews as UTF-8 bytes (LRA Text, Tay et al. 2021)
imdb_words          classification  imdb_reviews as words (vocabulary of the train split)
glue/<name>         classification  GLUE cola, sst2, mrpc, qqp, mnli, qnli, rte, wnli and
                    / regression    stsb (regression), each with its own GLUE metric
                                    (Wang et al. 2019)
tiny_shakespeare    token           character LM (Karpathy 2015), windows of ``seq_len``
smnist / psmnist    classification  MNIST as 784 pixels [784, 1] (Le et al. 2015), psmnist
                                    with a fixed seeded pixel permutation
scifar              classification  CIFAR-10 as 1024 pixels [1024, 3] (or grey [1024, 1])
retrieval           classification  LRA Retrieval: AAN document pairs as bytes, two-tower
                                    (``seqjax.data.lra_retrieval``; TSVs via manual_dir)
==================  ==============  ========================================================

Splits. Every task has train / validation / test. Datasets without a validation split
(imdb, mnist, cifar10) carve ``validation_fraction`` of ``train`` by ``seed``. GLUE hides its
test labels (-1), so GLUE's *validation* split is our ``test`` and our ``validation`` is
carved from ``train`` by ``seed`` (option ``test_split``, default the GLUE validation
split; MNLI: ``validation_matched`` or ``validation_mismatched``). Sentence pairs are joined as
``first EOS second``: the reserved EOS id doubles as the separator token.

Data is read with ``tfds.data_source`` (``array_record`` files; no TensorFlow). Nothing is
downloaded: a dataset not prepared in ``data_dir`` (default ``$SEQJAX_DATA_DIR`` or
``~/.cache/seqjax/tensorflow_datasets``) raises ``DatasetNotPreparedError`` saying how to
prepare it elsewhere. Under ``tfds.testing.mock_data`` the prepared check is skipped, so the
tasks run on TFDS's random examples in tests.

Text tasks take ``tokenizer`` (``'byte'``, ``'char'``, ``'word'`` or a saved
``tokenizer.to_dict()``, which skips building a vocabulary), ``max_len`` and ``truncate``
(default True: longer texts keep their first ``max_len`` tokens, as in LRA).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import grain
import numpy as np

from seqjax.data import lra_retrieval, tokenizers as tok
from seqjax.data.errors import DataError
from seqjax.data.real_common import (TokenWindows, as_text, check_fraction, check_int,
                                     check_seed, default_data_dir, resolve_options)
from seqjax.data.real_tfds import (SPLITS, TfdsOpener, carved_split_map, open_tfds,
                                   tfds_mocked)
from seqjax.data.spec import Task
from seqjax.data.spec import EOS_ID, TaskSpec


# ----------------------------------------------------------------------------- text tasks


class _EncodeText:
  """``(index, tfds example) -> {'inputs': int32 [time], 'label': int32 []}``."""

  def __init__(self, task: str, tokenizer: dict[str, Any], fields: tuple[str, ...],
               max_len: int, truncate: bool, label_dtype: Any = np.int32):
    self.task, self.tokenizer_dict, self.fields = task, tokenizer, fields
    self.max_len, self.truncate, self.label_dtype = max_len, truncate, label_dtype
    self._tok = None

  def __getstate__(self):
    return {**self.__dict__, '_tok': None}

  def encode(self, index: int, example: dict[str, Any]) -> np.ndarray:
    if self._tok is None:
      self._tok = tok.tokenizer_from_dict(self.tokenizer_dict)
    parts = []
    for j, field in enumerate(self.fields):
      if j:
        parts.append(np.array([EOS_ID], np.int32))  # separator between paired sentences
      parts.append(self._tok.encode(as_text(example[field], f'task {self.task!r} example '
                                            f'{index}')))
    ids = np.concatenate(parts).astype(np.int32)
    if len(ids) > self.max_len:
      if not self.truncate:
        raise DataError(f'task {self.task!r}: example {index} has {len(ids)} tokens, more '
                        f'than max_len={self.max_len}; raise max_len or pass truncate=True')
      ids = ids[:self.max_len]
    return ids

  def __call__(self, index: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
    return {'inputs': self.encode(index, example),
            'label': np.asarray(example['label'], self.label_dtype)}


def _texts(src, fields, chunk: int = 1024):
  """The training texts (fields joined by a space), read ``chunk`` records at a time."""
  # tfds.testing.mock_data installs a __getitems__ that cannot be called (an unbound
  # partial): mocked sources are read one record at a time.
  batched = hasattr(src, '__getitems__') and not tfds_mocked()
  for start in range(0, len(src), chunk):
    positions = range(start, min(start + chunk, len(src)))
    batch = src.__getitems__(positions) if batched else [src[i] for i in positions]
    for i, ex in zip(positions, batch):
      yield ' '.join(as_text(ex[f], f'training example {i}') for f in fields)


def _build_tokenizer(name: str, choice: Any, opts: dict[str, Any],
                     train_texts: Callable[[], Any]) -> tok.Tokenizer:
  if isinstance(choice, dict):
    return tok.tokenizer_from_dict(choice)
  if choice == 'byte':
    return tok.ByteTokenizer()
  if choice == 'char':
    return tok.CharTokenizer.build(train_texts(), allow_unknown=True)
  if choice == 'word':
    return tok.WordTokenizer.build(train_texts(), max_vocab=opts['max_vocab'],
                                   min_count=check_int(name, opts, 'min_count', 1))
  raise ValueError(f'task {name!r}: option tokenizer={choice!r} must be one of '
                   f'{list(tok.TOKENIZERS)} or a saved tokenizer dict')


def _text_factory(name: str, tfds_name: str, fields: tuple[str, ...], num_classes: int,
                  test_split: str, defaults: dict[str, Any], metrics: tuple[str, ...],
                  eval_metric: str, doc: str, kind: str = 'classification',
                  test_splits: tuple[str, ...] = ()) -> Callable[..., Task]:
  """A TFDS text (or text-pair) dataset as a task. ``test_splits`` lists the TFDS splits
  a user may evaluate on (option ``test_split``, e.g. MNLI's matched / mismatched
  validation sets); its default None means ``test_split``, so that one config can serve
  every GLUE task whatever its splits are called."""
  defaults = {'max_len': 1024, 'truncate': True, 'validation_fraction': 0.1,
              'max_vocab': 20000, 'min_count': 1, **defaults}
  if test_splits:
    defaults['test_split'] = None

  def factory(data_dir=None, seed: int = 0, **options: Any) -> Task:
    opts = resolve_options(name, defaults, options)
    seed = check_seed(name, seed)
    max_len = check_int(name, opts, 'max_len', 1)
    frac = check_fraction(name, opts, 'validation_fraction')
    data_dir = default_data_dir(data_dir)
    test = opts.get('test_split') or test_split
    if test_splits and test not in test_splits:
      raise ValueError(f'task {name!r}: option test_split={test!r} must be one of '
                       f'{list(test_splits)}')
    split_map = carved_split_map(test)
    probe = TfdsOpener(tfds_name, data_dir, seed, split_map, frac, None)
    train_src = probe.source('train')  # also the not-prepared check, before anything else
    tokenizer = _build_tokenizer(name, opts['tokenizer'], opts,
                                 functools.partial(_texts, train_src, fields))
    transform = _EncodeText(name, tokenizer.to_dict(), fields, max_len,
                            bool(opts['truncate']),
                            np.float32 if kind == 'regression' else np.int32)
    spec = TaskSpec(name=name, kind=kind, vocab_size=tokenizer.vocab_size,
                    num_classes=num_classes, max_len=max_len, metrics=metrics,
                    eval_metric=eval_metric, eval_metric_larger_is_better=True,
                    order_sensitive=True)
    metadata = {'task': name, 'seed': seed, 'options': {k: v for k, v in opts.items()
                                                        if k != 'tokenizer'},
                'tfds_name': tfds_name, 'tokenizer': tokenizer.to_dict()}
    return Task(spec=spec, open=TfdsOpener(tfds_name, data_dir, seed, split_map, frac,
                                        transform), metadata=metadata)

  factory.__name__ = name.replace('/', '_')
  factory.defaults = defaults  # every option the task accepts (registry.task_defaults)
  factory.__doc__ = f'{doc} Options (default): ' + ', '.join(
      f'{k}={v!r}' for k, v in sorted(defaults.items())) + '.'
  return factory


# ----------------------------------------------------------------------------- char LM


class _LMOpener:
  """tiny_shakespeare: one text per split -> char ids -> windows of ``seq_len``."""

  def __init__(self, tfds_name: str, data_dir: str, tokenizer: dict[str, Any],
               seq_len: int):
    self.tfds_name, self.data_dir, self.tokenizer, self.seq_len = (tfds_name, data_dir,
                                                                   tokenizer, seq_len)

  def __call__(self, split: str) -> grain.MapDataset:
    if split not in SPLITS:
      raise ValueError(f'task {self.tfds_name!r} has no split {split!r}; available: '
                       f'{list(SPLITS)}')
    src = open_tfds(self.tfds_name, split, self.data_dir)
    text = ''.join(as_text(src[i]['text'], f'{self.tfds_name} {split}')
                   for i in range(len(src)))
    ids = tok.tokenizer_from_dict(self.tokenizer).encode(text)
    windows = TokenWindows(ids, self.seq_len)
    if not len(windows):
      raise DataError(f'task tiny_shakespeare: split {split!r} has {len(ids)} characters, '
                      f'fewer than seq_len+1={self.seq_len + 1}; lower seq_len')
    return grain.MapDataset.source(windows)


TINY_SHAKESPEARE_DEFAULTS = {'seq_len': 256, 'tokenizer': 'char'}


def tiny_shakespeare(data_dir=None, seed: int = 0, **options: Any) -> Task:
  """Character-level LM on tiny_shakespeare: non-overlapping windows of ``seq_len``
  characters, targets = next character. Options (default): seq_len=256, tokenizer='char'
  ('char': the characters of the train split; 'byte': UTF-8 bytes; or a saved tokenizer
  dict, which a resumed run passes so that its vocabulary cannot change)."""
  opts = resolve_options('tiny_shakespeare', TINY_SHAKESPEARE_DEFAULTS, options)
  seed = check_seed('tiny_shakespeare', seed)
  seq_len = check_int('tiny_shakespeare', opts, 'seq_len', 1)
  data_dir = default_data_dir(data_dir)
  choice = opts['tokenizer']
  if isinstance(choice, dict):
    tokenizer = tok.tokenizer_from_dict(choice)
  elif choice == 'byte':
    open_tfds('tiny_shakespeare', 'train', data_dir)  # the not-prepared check
    tokenizer = tok.ByteTokenizer()
  elif choice == 'char':
    src = open_tfds('tiny_shakespeare', 'train', data_dir)
    tokenizer = tok.CharTokenizer.build(as_text(src[i]['text'], 'tiny_shakespeare train')
                                        for i in range(len(src)))
  else:
    raise ValueError(f"task 'tiny_shakespeare': option tokenizer={choice!r} must be one of "
                     "['char', 'byte'] or a saved tokenizer dict")
  spec = TaskSpec(name='tiny_shakespeare', kind='token', vocab_size=tokenizer.vocab_size,
                  max_len=seq_len, metrics=tok.lm_metrics(tokenizer),
                  eval_metric='loss', eval_metric_larger_is_better=False)
  metadata = {'task': 'tiny_shakespeare', 'seed': seed, 'options': {'seq_len': seq_len},
              'tfds_name': 'tiny_shakespeare', 'tokenizer': tokenizer.to_dict()}
  return Task(spec=spec, open=_LMOpener('tiny_shakespeare', data_dir, tokenizer.to_dict(),
                                        seq_len), metadata=metadata)


tiny_shakespeare.defaults = TINY_SHAKESPEARE_DEFAULTS


# ----------------------------------------------------------------------------- pixels


class _Pixels:
  """Image uint8 [H, W, C] -> float32 [H*W, C'] in [0, 1], optionally permuted / grey."""

  def __init__(self, permutation: np.ndarray | None, grayscale: bool):
    self.permutation, self.grayscale = permutation, grayscale

  def __call__(self, index: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
    del index
    image = np.asarray(example['image'], np.float32) / 255.0
    pixels = image.reshape(-1, image.shape[-1])
    if self.grayscale and pixels.shape[-1] == 3:
      # ITU-R BT.601 luma, as LRA's grey-scale sCIFAR.
      pixels = pixels @ np.array([[0.299], [0.587], [0.114]], np.float32)
    if self.permutation is not None:
      pixels = pixels[self.permutation]
    return {'inputs': pixels, 'label': np.asarray(example['label'], np.int32)}


def _pixel_factory(name: str, tfds_name: str, side: int, channels: int,
                   permuted: bool, doc: str) -> Callable[..., Task]:
  defaults = {'validation_fraction': 0.1}
  if permuted:
    defaults['permutation_seed'] = 0
  if channels == 3:
    defaults['grayscale'] = False

  def factory(data_dir=None, seed: int = 0, **options: Any) -> Task:
    opts = resolve_options(name, defaults, options)
    seed = check_seed(name, seed)
    frac = check_fraction(name, opts, 'validation_fraction')
    data_dir = default_data_dir(data_dir)
    length = side * side
    permutation = None
    if permuted:
      pseed = check_int(name, opts, 'permutation_seed', 0)
      # Fixed by its own seed (not the data seed) so every run sees the same permutation.
      permutation = np.random.default_rng(pseed).permutation(length)
    grey = bool(opts.get('grayscale', False))
    split_map = carved_split_map('test')
    TfdsOpener(tfds_name, data_dir, seed, split_map, frac, None).source('train')
    feats = 1 if grey else channels
    spec = TaskSpec(name=name, kind='classification', vocab_size=0, input_features=feats,
                    num_classes=10, max_len=length, metrics=('accuracy',),
                    eval_metric='accuracy', eval_metric_larger_is_better=True,
                    order_sensitive=True)
    metadata = {'task': name, 'seed': seed, 'options': dict(opts), 'tfds_name': tfds_name}
    return Task(spec=spec, open=TfdsOpener(tfds_name, data_dir, seed, split_map, frac,
                                        _Pixels(permutation, grey)), metadata=metadata)

  factory.__name__ = name
  factory.defaults = defaults
  factory.__doc__ = f'{doc} Options (default): ' + ', '.join(
      f'{k}={v!r}' for k, v in sorted(defaults.items())) + '.'
  return factory


# ----------------------------------------------------------------------------- table


def _glue(config: str, fields: tuple[str, ...], metrics: tuple[str, ...],
          num_classes: int = 2, kind: str = 'classification', test_split: str = 'validation',
          test_splits: tuple[str, ...] = ()) -> Callable[..., Task]:
  """GLUE ``config`` scored by its own metrics (Wang et al. 2019, table 1): the first one
  picks the best checkpoint."""
  return _text_factory(f'glue/{config}', f'glue/{config}', fields, num_classes, test_split,
                       {'tokenizer': 'word', 'max_len': 128}, metrics, metrics[0],
                       f'GLUE {config} (test = GLUE {test_split}; validation carved from '
                       f'train by seed).', kind=kind, test_splits=test_splits or (test_split,))


TASKS: dict[str, Callable[..., Task]] = {
    'imdb_bytes': _text_factory(
        'imdb_bytes', 'imdb_reviews/plain_text', ('text',), 2, 'test',
        {'tokenizer': 'byte'}, ('accuracy',), 'accuracy',
        'IMDB sentiment from UTF-8 bytes (LRA Text uses max_len=4096; 1024 here for CPU).'),
    'imdb_words': _text_factory(
        'imdb_words', 'imdb_reviews/plain_text', ('text',), 2, 'test',
        {'tokenizer': 'word', 'max_len': 512}, ('accuracy',), 'accuracy',
        'IMDB sentiment from words (vocabulary of the train split).'),
    # GLUE's metric per task: MCC for CoLA, F1 and accuracy for MRPC / QQP, Pearson and
    # Spearman correlation for STS-B (a 0-5 similarity score: regression), accuracy else.
    'glue/cola': _glue('cola', ('sentence',), ('mcc',)),
    'glue/sst2': _glue('sst2', ('sentence',), ('accuracy',)),
    'glue/mrpc': _glue('mrpc', ('sentence1', 'sentence2'), ('f1', 'accuracy')),
    'glue/qqp': _glue('qqp', ('question1', 'question2'), ('f1', 'accuracy')),
    'glue/stsb': _glue('stsb', ('sentence1', 'sentence2'), ('pearson', 'spearman', 'mse'),
                       num_classes=1, kind='regression'),
    'glue/mnli': _glue('mnli', ('premise', 'hypothesis'), ('accuracy',), num_classes=3,
                       test_split='validation_matched',
                       test_splits=('validation_matched', 'validation_mismatched')),
    'glue/qnli': _glue('qnli', ('question', 'sentence'), ('accuracy',)),
    'glue/rte': _glue('rte', ('sentence1', 'sentence2'), ('accuracy',)),
    'glue/wnli': _glue('wnli', ('sentence1', 'sentence2'), ('accuracy',)),
    'tiny_shakespeare': tiny_shakespeare,
    'retrieval': lra_retrieval.retrieval,
    'smnist': _pixel_factory('smnist', 'mnist', 28, 1, False,
                             'Sequential MNIST: 784 pixels in raster order.'),
    'psmnist': _pixel_factory('psmnist', 'mnist', 28, 1, True,
                              'Permuted sequential MNIST: 784 pixels, fixed permutation.'),
    'scifar': _pixel_factory('scifar', 'cifar10', 32, 3, False,
                             'Sequential CIFAR-10: 1024 RGB pixels in raster order.'),
}
