"""Preparing real datasets where the network allows: ``prepare(name, data_dir, manual_dir)``.

Runs TFDS ``download_and_prepare`` with ``file_format='array_record'`` into the data_dir
the tasks read (``default_data_dir``). ``name`` is a seqjax task (``imdb_words``,
``smnist``, ``retrieval``...) or any TFDS name (``glue/sst2``, ``imdb_reviews``).

Without network it fails fast, in one line: before downloading, every host in the
dataset's TFDS checksums list is resolved and connected to with a ``timeout``; an
unreachable host becomes a ``PrepareError`` naming the dataset, the first URL and the
manual alternative (TFDS ``manual_dir``: files put there under their URL's file name are
used instead of downloading). TFDS's own downloader retries a dead connection 10 times
with back-off (over 3 minutes measured here, with no network), so during the download its
retries are cut to ``_RETRIES`` and every socket gets a timeout: a failure mid-way is
bounded too. Datasets whose files can only be fetched by hand (``retrieval``) read them
from ``manual_dir`` and never touch the network.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import urllib.parse
from unittest import mock

import tensorflow_datasets as tfds

# Imported for its side effect: it registers seqjax's own TFDS builders (LRA Retrieval).
from seqjax.data import real  # pylint: disable=unused-import
from seqjax.data.errors import DataError
from seqjax.data.real_common import default_data_dir

# seqjax task -> the TFDS dataset it reads.
TFDS_NAMES = {'imdb_bytes': 'imdb_reviews/plain_text', 'imdb_words': 'imdb_reviews/plain_text',
              'tiny_shakespeare': 'tiny_shakespeare', 'smnist': 'mnist', 'psmnist': 'mnist',
              'scifar': 'cifar10', 'retrieval': 'seqjax_lra_retrieval'}
_RETRIES = 2  # TFDS's downloader retries (its default, 10 with back-off, hangs minutes)


class PrepareError(DataError):
  """A dataset could not be prepared; one line naming it and what to do."""


def tfds_name(name: str) -> str:
  return TFDS_NAMES.get(name, name)


def _builder(name: str, data_dir: str):
  """The TFDS builder of ``name`` writing array_record files into ``data_dir``."""
  if name.startswith('glue'):  # the legacy GLUE module registers itself on import
    import tensorflow_datasets.text.glue  # pylint: disable=g-import-not-at-top,unused-import
  try:
    return tfds.builder(name, data_dir=data_dir, file_format='array_record',
                        try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise PrepareError(f'unknown dataset {name!r}: give a seqjax task '
                       f'({", ".join(sorted(TFDS_NAMES))}, glue/<name>) or a TFDS dataset '
                       f'name') from None
  except (ValueError, KeyError) as err:  # e.g. an unknown config of a known dataset
    raise PrepareError(f'dataset {name!r}: {_first_line(err)}') from None


def _first_line(err: BaseException) -> str:
  lines = [line.strip() for line in str(err).splitlines() if line.strip()]
  return lines[0] if lines else type(err).__name__


def source_urls(builder) -> list[str]:
  """The URLs TFDS will download for ``builder`` (its checksums list; [] if unknown)."""
  try:
    infos = builder.url_infos
  except ModuleNotFoundError as err:
    raise PrepareError(f'tensorflow_datasets cannot download without the {err.name!r} '
                       f'package; run pip install -r requirements.txt') from None
  return sorted(infos or {})


def _connect(host: str, port: int, timeout: float) -> None:
  socket.create_connection((host, port), timeout=timeout).close()


def unreachable_host(urls: list[str], timeout: float) -> tuple[str, str] | None:
  """``(host, reason)`` of the first host of ``urls`` that cannot be connected to within
  ``timeout`` seconds (DNS included: it runs in a thread we stop waiting for)."""
  hosts = []
  for url in urls:
    parts = urllib.parse.urlparse(url)
    port = parts.port or (443 if parts.scheme == 'https' else 21 if parts.scheme == 'ftp'
                          else 80)
    if parts.hostname and (parts.hostname, port) not in hosts:
      hosts.append((parts.hostname, port))
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(hosts), 1))
  try:
    futures = {pool.submit(_connect, h, p, timeout): h for h, p in hosts}
    done, pending = concurrent.futures.wait(futures, timeout=timeout + 1)
    for future in futures:
      if future in pending:
        return futures[future], f'no answer within {timeout:g} s'
      if future.exception() is not None:
        return futures[future], _first_line(future.exception())
    return None
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _bounded_downloads(timeout: float):
  """TFDS's downloader with ``_RETRIES`` retries and a socket timeout, restored after."""
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  old = socket.getdefaulttimeout()
  socket.setdefaulttimeout(max(timeout, 1.0) * 6)  # a stalled transfer, not a slow one
  try:
    with mock.patch.object(downloader, 'MAX_RETRIES', _RETRIES):
      yield
  finally:
    socket.setdefaulttimeout(old)


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            timeout: float = 5.0) -> str:
  """Prepares ``name`` in ``data_dir`` (array_record); returns where it was written.
  Raises ``PrepareError`` (one line) when it cannot."""
  data_dir = default_data_dir(data_dir)
  tname = tfds_name(name)
  builder = _builder(tname, data_dir)
  if builder.is_prepared():
    return os.fspath(builder.data_dir)
  shown = name if tname == name else f'{name} ({tname})'
  manual_only = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if manual_only and not (manual_dir and os.path.isdir(manual_dir)):
    raise PrepareError(f'dataset {shown!r} needs --manual_dir=FOLDER: {manual_only}')
  if not manual_only and not manual_dir:
    urls = source_urls(builder)
    down = unreachable_host(urls, timeout)
    if down:
      more = f' (and {len(urls) - 1} more listed in its TFDS checksums)' if len(urls) > 1 \
          else ''
      raise PrepareError(
          f'dataset {shown!r}: cannot reach {down[0]} ({down[1]}), so nothing can be '
          f'downloaded; fetch {urls[0]}{more} by other means into a folder and rerun with '
          f'--manual_dir=FOLDER (TFDS manual_dir), or prepare it on a machine with '
          f'network and copy its --data_dir here')
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False,
      compute_stats=tfds.download.ComputeStatsMode.SKIP)
  try:
    with _bounded_downloads(timeout):
      builder.download_and_prepare(download_config=config)
  except DataError:
    raise
  except Exception as err:  # pylint: disable=broad-except
    # TFDS raises many types (requests, download, assertion); all end the same way.
    raise PrepareError(f'dataset {shown!r}: {type(err).__name__}: {_first_line(err)}; '
                       f'put its files in --manual_dir or prepare it where the network '
                       f'allows') from None
  return os.fspath(builder.data_dir)
