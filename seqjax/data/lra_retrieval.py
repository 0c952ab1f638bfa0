"""LRA Retrieval (Tay et al. 2021, sec. 3.2.3): does one ACL Anthology Network paper cite
the other (Radev et al. 2009)? Byte-level document pairs, up to 4,000 bytes each.

The data are the released TSV files of the LRA repository (``lra_release.gz`` ->
``lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv``: tab-separated, no header,
no quoting; columns ``label`` (0.0 / 1.0), ``id1``, ``id2``, ``text1``, ``text2``).
``SeqjaxLraRetrieval`` is a TFDS builder that reads them from ``manual_dir`` and writes
array_record files; prepare it once with::

    python -m scripts.prepare_data --datasets=retrieval --manual_dir=<folder with the TSVs>

The task ``retrieval`` (kind ``classification``, 2 classes, ``num_segments=2``) yields
``inputs`` int32 ``[2 * max_len]``: each document as UTF-8 bytes (id = byte + 4, the
``ByteTokenizer``), cut to ``max_len`` and right-padded to it, first document first, so
the model's dual encoder (``ModelConfig.num_segments``) encodes the two separately, as
LRA does. ``eval.tsv`` is the validation split.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import tokenizers as tok
from seqjax.data.errors import DataError
from seqjax.data.real_common import (as_text, check_int, check_seed, default_data_dir,
                                     resolve_options)
from seqjax.data.real_tfds import TfdsOpener
from seqjax.data.spec import Task
from seqjax.data.spec import PAD_ID, TaskSpec

TFDS_NAME = 'seqjax_lra_retrieval'
RELEASE_URL = 'https://storage.googleapis.com/long-range-arena/lra_release.gz'
FILES = {'train': 'new_aan_pairs.train.tsv', 'validation': 'new_aan_pairs.eval.tsv',
         'test': 'new_aan_pairs.test.tsv'}
COLUMNS = ('label', 'id1', 'id2', 'text1', 'text2')


class SeqjaxLraRetrieval(tfds.core.GeneratorBasedBuilder):
  """LRA Retrieval document pairs (AAN citation links), read from the released TSVs."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'download {RELEASE_URL}, unpack it (tar xzf) and pass its lra_release/tsv_data '
      f'folder (holding {", ".join(FILES.values())}) as manual_dir')
  # No checksums file to find beside this module (see synthetic/base.py).
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'text1': tfds.features.Text(), 'text2': tfds.features.Text(),
            'id1': tfds.features.Text(), 'id2': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['not_cited', 'cited'])}))

  def _split_generators(self, dl_manager):
    folder = dl_manager.manual_dir
    missing = [f for f in FILES.values() if not os.path.exists(os.path.join(folder, f))]
    if missing:
      raise DataError(f'dataset {TFDS_NAME!r}: {missing[0]} is not in manual_dir={folder}; '
                      f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return {split: self._generate_examples(os.path.join(folder, name))
            for split, name in FILES.items()}

  def _generate_examples(self, path: str):
    with open(path, encoding='utf-8', newline='\n') as f:
      for number, line in enumerate(f, start=1):
        line = line.rstrip('\r\n')
        if not line:
          continue
        fields = line.split('\t')
        if len(fields) != len(COLUMNS):
          raise DataError(f'{path}: line {number}: expected {len(COLUMNS)} tab-separated '
                          f'columns {COLUMNS}, found {len(fields)}; use the released '
                          f'LRA files unchanged')
        try:
          label = int(float(fields[0]))
        except ValueError:
          label = -1
        if label not in (0, 1):
          raise DataError(f'{path}: line {number}: label {fields[0]!r} is not 0 or 1')
        yield number, {'label': label, 'id1': fields[1], 'id2': fields[2],
                       'text1': fields[3], 'text2': fields[4]}


class _EncodePair:
  """``(index, example) -> {'inputs': int32 [2 * max_len], 'label': int32 []}``."""

  def __init__(self, max_len: int):
    self.max_len = max_len

  def __call__(self, index: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
    inputs = np.full((2 * self.max_len,), PAD_ID, np.int32)
    for j, field in enumerate(('text1', 'text2')):
      ids = tok.ByteTokenizer().encode(as_text(example[field], f'retrieval example {index}'))
      ids = ids[:self.max_len]
      inputs[j * self.max_len:j * self.max_len + len(ids)] = ids
    return {'inputs': inputs, 'label': np.asarray(example['label'], np.int32)}


DEFAULTS = {'max_len': 4000}


def retrieval(data_dir=None, seed: int = 0, **options: Any) -> Task:
  """LRA Retrieval: byte-level document pairs, each cut to ``max_len`` bytes (LRA: 4000).
  Options (default): max_len=4000."""
  name = 'retrieval'
  opts = resolve_options(name, DEFAULTS, options)
  seed = check_seed(name, seed)
  max_len = check_int(name, opts, 'max_len', 1)
  data_dir = default_data_dir(data_dir)
  split_map = {s: s for s in FILES}
  opener = TfdsOpener(TFDS_NAME, data_dir, seed, split_map, 0.0, _EncodePair(max_len))
  opener.source('train')  # the not-prepared check, before anything else
  spec = TaskSpec(name=name, kind='classification', vocab_size=tok.ByteTokenizer().vocab_size,
                  num_classes=2, max_len=2 * max_len, metrics=('accuracy',),
                  eval_metric='accuracy', eval_metric_larger_is_better=True,
                  num_segments=2)
  metadata = {'task': name, 'seed': seed, 'options': dict(opts), 'tfds_name': TFDS_NAME}
  return Task(spec=spec, open=opener, metadata=metadata)


retrieval.defaults = DEFAULTS  # every option the task accepts (registry.task_defaults)
