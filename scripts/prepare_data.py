"""Prepare real datasets (TFDS ``download_and_prepare``, array_record) where seqjax reads them.

    python -m scripts.prepare_data --datasets=imdb_reviews,glue/sst2,tiny_shakespeare
    python -m scripts.prepare_data --datasets=retrieval --manual_dir=lra_release/tsv_data

``--datasets`` takes seqjax task names (imdb_bytes, imdb_words, tiny_shakespeare, smnist,
psmnist, scifar, retrieval, glue/<name>) or TFDS names. Data goes to ``--data_dir``
(default ``$SEQJAX_DATA_DIR`` or ``~/.cache/seqjax/tensorflow_datasets``), the directory
every task reads. Without network each dataset fails within seconds with one line that
names it and the ``--manual_dir`` alternative; the exit code is 1 if any failed. The
synthetic tasks (and Pathfinder) need no preparation: they are generated on first use.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from absl import app
from absl import flags
from absl import logging

from experiments import cli

_DATASETS = flags.DEFINE_list('datasets', None, 'Datasets to prepare: seqjax task names '
                              '(imdb_words, smnist, retrieval, glue/sst2, ...) or TFDS names.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where to write them (default '
                                '$SEQJAX_DATA_DIR or ~/.cache/seqjax/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder of files downloaded by hand '
                                  '(TFDS manual_dir): used instead of the network.')
_TIMEOUT = flags.DEFINE_float('timeout', 5.0, 'Seconds to wait for a download host to '
                              'answer before giving up.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DATASETS.value:
    cli.fail('--datasets is required, e.g. --datasets=imdb_reviews,glue/sst2')
  quiet = not flags.FLAGS['verbosity'].present
  if quiet:
    # TFDS logs half-prepared folders and failed lookups as warnings, draws progress bars
    # and prints its own "Downloading and preparing" lines; the outcome of each dataset is
    # the one line printed below (--verbosity=0 shows all of TFDS's output).
    logging.set_verbosity(logging.ERROR)
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
  from seqjax.data import prepare  # pylint: disable=g-import-not-at-top
  failed = 0
  for name in _DATASETS.value:
    try:
      with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        where = prepare.prepare(name, _DATA_DIR.value, _MANUAL_DIR.value, _TIMEOUT.value)
    except ValueError as err:
      print(f'error: {str(err).strip().splitlines()[0]}', file=sys.stderr)
      failed += 1
    else:
      print(f'prepared {name} in {where}')
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  cli.run(main)
