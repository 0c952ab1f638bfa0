"""Opening prepared TFDS datasets without downloading: ``open_tfds`` and ``TfdsOpener``.

``open_tfds(name, split, data_dir)`` checks that ``name`` is prepared in ``data_dir`` as
random-access files (``array_record``/``parquet``) *before* calling ``tfds.data_source``, so
a missing dataset is a fast ``DatasetNotPreparedError`` (no network attempt) whose one line
says how to prepare it elsewhere. Under ``tfds.testing.mock_data`` (which swaps
``DatasetBuilder.as_data_source`` for random examples and points builders at its own
metadata directory) the check is skipped so tests run offline on mocked data.
"""

from __future__ import annotations

from typing import Any, Callable

import grain
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

from seqjax.data.errors import DatasetNotPreparedError
from seqjax.data.real_common import Subset, carve

SPLITS = ('train', 'validation', 'test')


def tfds_mocked() -> bool:
  # tfds.testing.mock_data swaps DatasetBuilder.as_data_source for its own random source
  # and points builders at a metadata dir, so the prepared check would wrongly fail.
  fn = tfds.core.DatasetBuilder.as_data_source
  return getattr(fn, '__module__', '').startswith('tensorflow_datasets.testing')


def open_tfds(tfds_name: str, split: str, data_dir: str) -> Any:
  """``tfds.data_source(tfds_name, split)`` or ``DatasetNotPreparedError`` (no download)."""
  if tfds_name.startswith('glue/'):
    # GLUE lives in the legacy text module, which registers it only once imported.
    import tensorflow_datasets.text.glue  # pylint: disable=g-import-not-at-top,unused-import
  if not tfds_mocked():
    builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    if getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
      prepare = (f'python -m scripts.prepare_data --datasets={tfds_name} --data_dir=DIR '
                 f'--manual_dir=FOLDER ({builder.MANUAL_DOWNLOAD_INSTRUCTIONS}) and pass '
                 f'--data_dir=DIR')
    else:
      prepare = (f'python -m scripts.prepare_data --datasets={tfds_name} --data_dir=DIR '
                 f'on a machine with network (it runs TFDS download_and_prepare), then copy '
                 f'DIR here or pass --data_dir=DIR')
    if not builder.is_prepared():
      raise DatasetNotPreparedError(
          f'dataset {tfds_name!r} is not prepared in data_dir={data_dir!r} (and nothing is '
          f'downloaded here): run {prepare}')
    fmt = builder.info.file_format
    if fmt not in file_adapters.FileFormat.with_random_access():
      raise DatasetNotPreparedError(
          f'dataset {tfds_name!r} in data_dir={data_dir!r} is prepared as '
          f'{getattr(fmt, "value", fmt)}, which has no random access: run {prepare}')
  return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)


class TfdsOpener:
  """``Task.open``: our split -> the TFDS split (+ a seeded carve) -> mapped examples."""

  def __init__(self, tfds_name: str, data_dir: str, seed: int, split_map: dict[str, str],
               carve_fraction: float, transform: Callable[[int, Any], Any]):
    self.tfds_name, self.data_dir, self.seed = tfds_name, data_dir, seed
    self.split_map, self.carve_fraction, self.transform = split_map, carve_fraction, transform

  def source(self, split: str):
    if split not in SPLITS:
      raise ValueError(f'task {self.tfds_name!r} has no split {split!r}; available: '
                       f'{list(SPLITS)}')
    src = open_tfds(self.tfds_name, self.split_map[split], self.data_dir)
    if split in ('train', 'validation') and self.split_map[split] == self.split_map['train']:
      val, train = carve(len(src), [self.carve_fraction], self.seed)
      src = Subset(src, train if split == 'train' else val)
    return src

  def __call__(self, split: str) -> grain.MapDataset:
    return grain.MapDataset.source(self.source(split)).map_with_index(self.transform)


def carved_split_map(test: str) -> dict[str, str]:
  return {'train': 'train', 'validation': 'train', 'test': test}
