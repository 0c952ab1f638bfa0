"""User files: text_file windows and splits, csv parsing/labels/splits, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from seqjax.data import tokenizers as tok
from seqjax.data.errors import DataError
from seqjax.data.pipeline import make_eval_iterator
from seqjax.data.registry import get_task

POEM = ''.join(f'line {i}: the quick brown fox — número {i * i}\n' for i in range(40))


def _write(tmp_path, name, content):
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding='utf-8')
  return str(path)


@pytest.mark.parametrize('tokenizer', ['char', 'byte'])
def test_text_file_windows(tmp_path, tokenizer):
  path = _write(tmp_path, 'poem.txt', POEM)
  task = get_task('text_file', path=path, seq_len=16, tokenizer=tokenizer, seed=3)
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  units = POEM if tokenizer == 'char' else POEM.encode('utf-8')
  for split in task.spec.splits:
    ds = task.dataset(split)
    for i in range(len(ds)):
      ex = ds[i]
      s = int(task.open.sources[split].starts[i])
      if tokenizer == 'char':
        ref = t.encode(units[s:s + 17])
      else:  # windows may cut a multi-byte character: compare raw bytes
        ref = np.frombuffer(units[s:s + 17], np.uint8).astype(np.int32) + 4
      np.testing.assert_array_equal(ex['inputs'], ref[:16])
      np.testing.assert_array_equal(ex['targets'], ref[1:])   # next token
      if tokenizer == 'char' and split == 'train':  # every training char is in the vocab
        assert t.decode(ex['inputs']) == units[s:s + 16]
  all_starts = [set(task.open.sources[s].starts.tolist()) for s in task.spec.splits]
  assert sum(len(s) for s in all_starts) == len(set().union(*all_starts))  # disjoint
  assert set().union(*all_starts) == set(range(0, 17 * (len(units) // 17), 17))  # no overlap
  again = get_task('text_file', path=path, seq_len=16, tokenizer=tokenizer, seed=3)
  other = get_task('text_file', path=path, seq_len=16, tokenizer=tokenizer, seed=4)
  same = again.open.sources['validation'].starts
  np.testing.assert_array_equal(same, task.open.sources['validation'].starts)
  assert not np.array_equal(other.open.sources['validation'].starts, same)
  batch = next(make_eval_iterator(task.dataset('train'), task.spec, batch_size=4))
  assert batch['inputs'].shape == (4, 16) and batch['mask'].all()


def test_text_file_line_split(tmp_path):
  path = _write(tmp_path, 'poem.txt', POEM)
  task = get_task('text_file', path=path, seq_len=8, split_level='line',
                  validation_fraction=0.2, test_fraction=0.2)
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  lines = POEM.splitlines(keepends=True)
  texts = {}
  for split in task.spec.splits:
    src = task.open.sources[split]
    texts[split] = t.decode(src.ids)
  # Every split is a concatenation of whole lines, and the lines are dealt disjointly.
  dealt = []
  for split, text in texts.items():
    own = [ln for ln in text.splitlines(keepends=True)]
    assert all(ln in lines for ln in own), split
    dealt += own
  assert sorted(dealt) == sorted(lines)
  # The char vocabulary comes from the training lines only.
  assert set(t.vocab) == set(texts['train'])


def test_csv_labels_and_splits(tmp_path):
  rows = [(f'movie {i} was {"great" if i % 3 else "awful"}', ['neg', 'pos', 'meh'][i % 3])
          for i in range(30)]
  path = _write(tmp_path, 'reviews.csv',
                'id,label,text\n' + ''.join(f'{i},{lab},"{txt}, really"\n'
                                            for i, (txt, lab) in enumerate(rows)))
  task = get_task('csv', path=path, seed=2)
  assert task.metadata['label_names'] == ['meh', 'neg', 'pos']  # sorted class names
  assert task.spec.num_classes == 3 and task.spec.kind == 'classification'
  # The same file and seed with the byte tokenizer deals the same rows: decode them.
  as_bytes = get_task('csv', path=path, seed=2, tokenizer='byte')
  t = tok.tokenizer_from_dict(task.metadata['tokenizer'])
  b = tok.ByteTokenizer()
  dealt = {}
  for split in task.spec.splits:
    words_ds, bytes_ds = task.dataset(split), as_bytes.dataset(split)
    assert len(words_ds) == len(bytes_ds)
    for ex, exb in zip(words_ds, bytes_ds):
      text = b.decode(exb['inputs'])
      i = int(text.split()[1])
      dealt[i] = split
      assert task.metadata['label_names'][int(ex['label'])] == rows[i][1]
      np.testing.assert_array_equal(ex['inputs'], t.encode(text))
  assert sorted(dealt) == list(range(30))          # every row dealt exactly once
  assert task.metadata['num_examples'] == {'train': 24, 'validation': 3, 'test': 3}
  # The word vocabulary comes from the training rows only.
  train_words = {w for i, s in dealt.items() if s == 'train'
                 for w in t.split(rows[i][0] + ', really')}
  assert set(t.vocab) == train_words
  held_out = {str(i) for i, s in dealt.items() if s != 'train'}
  assert held_out and not held_out & set(t.vocab)
  other = get_task('csv', path=path, seed=3, tokenizer='byte')
  assert [b.decode(e['inputs']) for e in other.dataset('test')] != [
      b.decode(e['inputs']) for e in as_bytes.dataset('test')]


def test_tsv_int_labels_and_columns(tmp_path):
  path = _write(tmp_path, 'data.tsv',
                ''.join(f'{i % 4}\ttext number {i}\n' for i in range(20)))
  task = get_task('csv', path=path, header=False, text_column=1, label_column=0,
                  num_classes=5, tokenizer='byte', max_len=32)
  assert task.spec.num_classes == 5 and task.spec.vocab_size == 260
  t = tok.ByteTokenizer()
  for split in task.spec.splits:
    for ex in task.dataset(split):
      i = int(t.decode(ex['inputs']).split()[-1])
      assert int(ex['label']) == i % 4     # ints used as is when num_classes is given
  # Without num_classes, distinct ints are numbered in sorted order.
  path2 = _write(tmp_path, 'stars.tsv', 'label\ttext\n' + ''.join(
      f'{1 + i % 5}\tstars {i}\n' for i in range(20)))
  task2 = get_task('csv', path=path2, tokenizer='char')
  assert task2.metadata['label_names'] == ['1', '2', '3', '4', '5']


def _error(tmp_path, **options):
  with pytest.raises(DataError) as err:
    get_task('csv' if 'seq_len' not in options else 'text_file', **options)
  msg = str(err.value)
  assert '\n' not in msg
  return msg


def test_bad_inputs_name_file_and_row(tmp_path):
  missing = str(tmp_path / 'nope.csv')
  assert missing in _error(tmp_path, path=missing)
  empty = _write(tmp_path, 'empty.csv', '  \n')
  assert empty in _error(tmp_path, path=empty) and 'empty' in _error(tmp_path, path=empty)
  empty_txt = _write(tmp_path, 'empty.txt', '')
  assert 'empty' in _error(tmp_path, path=empty_txt, seq_len=4)
  bad_utf8 = _write(tmp_path, 'latin.csv', b'text,label\nok,0\ncaf\xe9,1\n')
  msg = _error(tmp_path, path=bad_utf8)
  assert bad_utf8 in msg and 'line 3' in msg and 'UTF-8' in msg
  malformed = _write(tmp_path, 'cols.csv', 'text,label\na,0\nb,1,extra\nc,0\n')
  msg = _error(tmp_path, path=malformed)
  assert malformed in msg and 'line 3' in msg and 'found 3' in msg
  out_of_range = _write(tmp_path, 'labels.csv', 'text,label\na,0\nb,1\nc,7\nd,0\n')
  msg = _error(tmp_path, path=out_of_range, num_classes=2)
  assert out_of_range in msg and 'line 4' in msg and 'outside [0, 2)' in msg
  too_many = _write(tmp_path, 'names.csv', 'text,label\na,x\nb,y\nc,z\n')
  msg = _error(tmp_path, path=too_many, num_classes=2)
  assert 'line 4' in msg and 'num_classes=2' in msg
  long_row = _write(tmp_path, 'long.csv', 'text,label\na b,0\nc d e f g h,1\ni,0\n')
  msg = _error(tmp_path, path=long_row, max_len=4)
  assert long_row in msg and 'line 3' in msg and 'truncate=True' in msg
  ok = get_task('csv', path=long_row, max_len=4, truncate=True, validation_fraction=0,
                test_fraction=0)
  assert ok.spec.splits == ('train',)
  assert max(len(ex['inputs']) for ex in ok.dataset('train')) == 4
  col = _error(tmp_path, path=long_row, text_column='review')
  assert "'review'" in col and 'line 1' in col
  short = _write(tmp_path, 'short.txt', 'abc')
  msg = _error(tmp_path, path=short, seq_len=8)
  assert short in msg and 'seq_len=8' in msg
