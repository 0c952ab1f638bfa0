"""``prepare``: offline it fails fast in one line; a builder whose source files the test
writes (LRA Retrieval's TSVs in manual_dir) is prepared for real and read back."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seqjax.data import prepare
from seqjax.data.errors import DatasetNotPreparedError
from seqjax.data.pipeline import make_iterator
from seqjax.data.registry import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = {
    'new_aan_pairs.train.tsv': [(1, 'Parsing with CCG.', 'We cite parsing: CCG ☺'),
                                (0, 'Speech tagging', 'Unrelated graph paper'),
                                (1, 'x' * 30, 'short'), (0, 'a', 'b'), (1, 'é', 'ü'),
                                (0, 'p', 'q')],
    'new_aan_pairs.eval.tsv': [(0, 'eval one', 'eval two'), (1, 'e3', 'e4')],
    'new_aan_pairs.test.tsv': [(1, 'test doc', 'cited doc'), (0, 't1', 't2'),
                               (1, 'y' * 20, 'z' * 20)],
}


def _write_tsvs(folder, rows=ROWS):
  os.makedirs(folder, exist_ok=True)
  for name, lines in rows.items():
    with open(os.path.join(folder, name), 'w', encoding='utf-8') as f:
      for i, (label, a, b) in enumerate(lines):
        f.write(f'{float(label)}\tid{i}a\tid{i}b\t{a}\t{b}\n')


def _bytes(text, n):
  ids = np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32)[:n] + 4
  return np.pad(ids, (0, n - len(ids)))


def test_offline_prepare_fails_fast_in_one_line(tmp_path, monkeypatch):
  """No network: one line naming the dataset, its URL and --manual_dir, in seconds."""
  def unreachable(*args, **kwargs):
    raise OSError(101, 'Network is unreachable')
  monkeypatch.setattr(socket, 'create_connection', unreachable)
  monkeypatch.setattr(socket.socket, 'connect', unreachable)
  start = time.perf_counter()
  for name in ('imdb_words', 'glue/sst2'):
    with pytest.raises(prepare.PrepareError) as err:
      prepare.prepare(name, str(tmp_path))
    msg = str(err.value)
    assert '\n' not in msg and 'Network is unreachable' in msg
    assert prepare.tfds_name(name) in msg and '--manual_dir' in msg and 'http' in msg
  assert time.perf_counter() - start < 10
  with pytest.raises(prepare.PrepareError, match="'retrieval .*needs --manual_dir.*lra_release"):
    prepare.prepare('retrieval', str(tmp_path))


class SeqjaxTestFlakySource(tfds.core.GeneratorBasedBuilder):
  """Downloads from a local server that answers 503: TFDS's downloader retries that."""

  VERSION = tfds.core.Version('1.0.0')
  URL = ''
  code_path = None  # no checksums file

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'x': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    dl_manager.download(self.URL)
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    yield 0, {'x': 'never reached'}


def test_failing_download_gives_up_quickly(tmp_path):
  """A server that keeps failing: TFDS alone retries 10 times with back-off (~200 s
  measured); prepare bounds it and reports one line."""
  class Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
      self.send_response(503)
      self.end_headers()

    def log_message(self, *args):
      del args

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Unavailable)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    SeqjaxTestFlakySource.URL = f'http://127.0.0.1:{server.server_port}/data.tsv'
    start = time.perf_counter()
    with pytest.raises(prepare.PrepareError) as err:
      prepare.prepare('seqjax_test_flaky_source', str(tmp_path))
    assert time.perf_counter() - start < 15
  finally:
    server.shutdown()
  msg = str(err.value)
  assert '\n' not in msg and 'seqjax_test_flaky_source' in msg and '--manual_dir' in msg


def test_retrieval_prepared_from_manual_dir_and_read_back(tmp_path):
  manual, data = str(tmp_path / 'manual'), str(tmp_path / 'data')
  with pytest.raises(DatasetNotPreparedError, match=r'prepare_data --datasets=seqjax_lra_'
                                                    r'retrieval .*--manual_dir'):
    get_task('retrieval', data_dir=data)
  _write_tsvs(manual)
  where = prepare.prepare('retrieval', data, manual)
  assert where.startswith(data) and prepare.prepare('retrieval', data) == where  # no-op
  task = get_task('retrieval', data_dir=data, max_len=8)
  spec = task.spec
  assert (spec.kind, spec.num_classes, spec.num_segments, spec.max_len) == (
      'classification', 2, 2, 16)
  assert spec.model_fields()['num_segments'] == 2
  for split, name in (('train', 'new_aan_pairs.train.tsv'),
                      ('validation', 'new_aan_pairs.eval.tsv'),
                      ('test', 'new_aan_pairs.test.tsv')):
    ds = task.dataset(split)
    assert len(ds) == len(ROWS[name])
    for i, (label, a, b) in enumerate(ROWS[name]):
      np.testing.assert_array_equal(ds[i]['inputs'],
                                    np.concatenate([_bytes(a, 8), _bytes(b, 8)]))
      assert ds[i]['label'] == label
  batch = next(make_iterator(task.dataset('train'), spec, batch_size=4, seed=0))
  assert batch['inputs'].shape == (4, 16)


def test_bad_tsv_is_one_line(tmp_path):
  manual = str(tmp_path / 'manual')
  _write_tsvs(manual)
  with open(os.path.join(manual, 'new_aan_pairs.eval.tsv'), 'a', encoding='utf-8') as f:
    f.write('1.0\tonly three\tcolumns\n')
  with pytest.raises(ValueError, match=r'new_aan_pairs.eval.tsv: line 3: expected 5 '
                                       r'tab-separated columns'):
    prepare.prepare('retrieval', str(tmp_path / 'data'), manual)


def test_script_exit_code_and_one_line_per_dataset(tmp_path):
  """The entry point as a user runs it (no network needed): one line per dataset, and at
  the default verbosity no TFDS progress bars (they go to stderr) around them."""
  _write_tsvs(tmp_path / 'manual')
  proc = subprocess.run(
      [sys.executable, '-m', 'scripts.prepare_data', '--datasets=retrieval,no_such_set',
       f'--data_dir={tmp_path}/data', f'--manual_dir={tmp_path}/manual'], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stdout.strip().splitlines() == [
      f'prepared retrieval in {prepare.prepare("retrieval", f"{tmp_path}/data")}']
  errors = proc.stderr.strip().splitlines()
  assert len(errors) == 1 and errors[0].startswith('error: '), proc.stderr
  assert 'no_such_set' in errors[0]
