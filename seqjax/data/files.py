"""The user's own files as tasks: ``TASKS = {'text_file': ..., 'csv': ...}``.

``text_file`` — a UTF-8 text file as a character (or byte) language model (kind ``token``):
the text is cut into disjoint windows of ``seq_len + 1`` tokens (inputs = first
``seq_len``, targets = the next token at each position). ``split_level='window'`` deals the
windows to train/validation/test by ``seed``; ``split_level='line'`` deals whole lines
first (no window mixes splits' text), then cuts each split's text into windows. A char
vocabulary is built from the training part only (unseen characters -> UNK).

``csv`` — a CSV/TSV file of (text, label) rows for classification. Columns by header name
or 0-based index (``text_column``, ``label_column``; ``header=False`` for none); the
delimiter is ``','`` or, for ``.tsv`` files, a tab (or ``delimiter=``). Labels: when every
label is an integer and ``num_classes`` is given they are used as is and must lie in
``[0, num_classes)``; otherwise the distinct labels (ints, or class names) are sorted and
numbered ``0..C-1`` (``metadata['label_names']``). Rows are dealt to train/validation/test
by ``seed``; the tokenizer (``byte``/``char``/``word``) learns its vocabulary from the
training rows only.

Bad input raises ``seqjax.data.errors.DataError`` with one line naming the file, the line or
row number and the fix.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

import grain
import numpy as np

from seqjax.data import tokenizers as tok
from seqjax.data.errors import DataError
from seqjax.data.real_common import (TokenWindows, carve, check_fraction, check_int,
                                     check_seed, resolve_options)
from seqjax.data.spec import Task
from seqjax.data.spec import TaskSpec

SPLITS = ('train', 'validation', 'test')


def _read_text(path: Any, task: str) -> tuple[str, str]:
  """(path, UTF-8 text) or a DataError naming the file and line."""
  if path is None:
    raise DataError(f'task {task!r}: option path is required (the file to read)')
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f'{path}: file not found; check option path=')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise DataError(f'{path}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; '
                    f're-save the file as UTF-8') from None
  if text.startswith('\ufeff'):
    text = text[1:]  # byte-order mark written by some editors
  if not text.strip():
    raise DataError(f'{path}: file is empty; give a file with text in it')
  return path, text


class _Examples:
  """A list of ready examples as a random-access source."""

  def __init__(self, examples: list[dict[str, np.ndarray]]):
    self.examples = examples

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return self.examples[i]


class _StaticOpener:
  def __init__(self, name: str, sources: dict[str, Any]):
    self.name, self.sources = name, sources

  def __call__(self, split: str) -> grain.MapDataset:
    if split not in self.sources:
      raise ValueError(f'task {self.name!r} has no split {split!r}; available: '
                       f'{list(self.sources)}')
    return grain.MapDataset.source(self.sources[split])


# ----------------------------------------------------------------------------- text_file

TEXT_DEFAULTS = {'path': None, 'tokenizer': 'char', 'seq_len': 256, 'split_level': 'window',
                 'validation_fraction': 0.1, 'test_fraction': 0.1}


def text_file(data_dir=None, seed: int = 0, **options: Any) -> Task:
  """A text file as a char/byte LM. Options (default): path (required),
  tokenizer='char' ('char'|'byte'|saved dict), seq_len=256, split_level='window'
  ('window'|'line'), validation_fraction=0.1, test_fraction=0.1."""
  del data_dir  # the file is the data
  name = 'text_file'
  opts = resolve_options(name, TEXT_DEFAULTS, options)
  seed = check_seed(name, seed)
  seq_len = check_int(name, opts, 'seq_len', 1)
  fracs = [check_fraction(name, opts, 'validation_fraction'),
           check_fraction(name, opts, 'test_fraction')]
  level = opts['split_level']
  if level not in ('window', 'line'):
    raise ValueError(f'task {name!r}: option split_level={level!r} must be one of '
                     f"['window', 'line']")
  choice = opts['tokenizer']
  if not (isinstance(choice, dict) or choice in ('char', 'byte')):
    raise ValueError(f"task {name!r}: option tokenizer={choice!r} must be one of "
                     f"['char', 'byte'] or a saved tokenizer dict")
  path, text = _read_text(opts['path'], name)
  is_char = choice == 'char' or (isinstance(choice, dict) and choice.get('type') == 'char')
  splits = ('train',) + tuple(s for s, f in zip(SPLITS[1:], fracs) if f > 0)
  if level == 'window':
    # Window w covers tokens [w*(seq_len+1), (w+1)*(seq_len+1)) (chars for char, bytes for
    # byte): windows share no token, so no text leaks between splits.
    span = seq_len + 1
    length = len(text) if is_char else len(text.encode('utf-8'))
    num_windows = length // span
    if num_windows < len(splits):
      raise DataError(f'{path}: line 1: the file has {length} tokens, too few for '
                      f'{len(splits)} window(s) of seq_len={seq_len} (need '
                      f'{len(splits) * span}); lower seq_len or give a longer file')
    parts = dict(zip(('validation', 'test', 'train'), carve(num_windows, fracs, seed)))
    train_text = [text[w * span:(w + 1) * span] for w in parts['train']] \
        if is_char else []
  else:
    lines = text.splitlines(keepends=True)
    parts = dict(zip(('validation', 'test', 'train'), carve(len(lines), fracs, seed)))
    split_text = {s: ''.join(lines[i] for i in parts[s]) for s in SPLITS}
    train_text = [split_text['train']]
  if isinstance(choice, dict):
    tokenizer = tok.tokenizer_from_dict(choice)
  elif choice == 'char':
    tokenizer = tok.CharTokenizer.build(train_text, allow_unknown=True)
  else:
    tokenizer = tok.ByteTokenizer()
  sources = {}
  if level == 'window':
    ids = tokenizer.encode(text)
    for split in splits:
      sources[split] = TokenWindows(ids, seq_len, parts[split] * span)
  else:
    for split in splits:
      sources[split] = TokenWindows(tokenizer.encode(split_text[split]), seq_len)
      if not len(sources[split]):
        raise DataError(f'{path}: line 1: split {split!r} gets fewer than seq_len+1='
                        f'{seq_len + 1} tokens from split_level="line"; lower seq_len, '
                        f'give a longer file or use split_level="window"')
  spec = TaskSpec(name=name, kind='token', vocab_size=tokenizer.vocab_size, max_len=seq_len,
                  metrics=tok.lm_metrics(tokenizer), eval_metric='loss',
                  eval_metric_larger_is_better=False, splits=splits)
  metadata = {'task': name, 'seed': seed, 'path': path, 'tokenizer': tokenizer.to_dict(),
              'options': {k: v for k, v in opts.items() if k != 'tokenizer'},
              'num_examples': {s: len(sources[s]) for s in splits}}
  return Task(spec=spec, open=_StaticOpener(name, sources), metadata=metadata)


# ----------------------------------------------------------------------------- csv

CSV_DEFAULTS = {'path': None, 'text_column': None, 'label_column': None, 'header': True,
                'delimiter': None, 'tokenizer': 'word', 'max_len': 256, 'truncate': False,
                'num_classes': None, 'validation_fraction': 0.1, 'test_fraction': 0.1,
                'max_vocab': 20000, 'min_count': 1}


def _column(value: Any, default_name: str, default_index: int, header: list[str] | None,
            path: str, option: str) -> int:
  if value is None:
    value = default_name if header is not None else default_index
  if isinstance(value, str) and not value.isdigit():
    if header is None or value not in header:
      raise DataError(f'{path}: line 1: no column named {value!r} (header: {header}); '
                      f'set {option}= to a column name or 0-based index')
    return header.index(value)
  return int(value)


def csv_file(data_dir=None, seed: int = 0, **options: Any) -> Task:
  """A CSV/TSV of (text, label) rows. Options (default): path (required),
  text_column ('text' or 0), label_column ('label' or 1), header=True, delimiter=None
  (',' or tab for .tsv), tokenizer='word' ('byte'|'char'|'word'|saved dict), max_len=256,
  truncate=False, num_classes=None, validation_fraction=0.1, test_fraction=0.1,
  max_vocab=20000, min_count=1."""
  del data_dir
  name = 'csv'
  opts = resolve_options(name, CSV_DEFAULTS, options)
  seed = check_seed(name, seed)
  max_len = check_int(name, opts, 'max_len', 1)
  fracs = [check_fraction(name, opts, 'validation_fraction'),
           check_fraction(name, opts, 'test_fraction')]
  num_classes = opts['num_classes']
  if num_classes is not None:
    num_classes = check_int(name, opts, 'num_classes', 2)
  path, text = _read_text(opts['path'], name)
  delim = opts['delimiter'] or ('\t' if path.lower().endswith('.tsv') else ',')
  reader = csv.reader(io.StringIO(text), delimiter=delim)
  header, width = None, None
  rows: list[tuple[int, str, str]] = []  # (line number, text, label)
  try:
    for row in reader:
      line = reader.line_num
      if not row or all(not c.strip() for c in row):
        continue  # blank lines carry no example
      if width is None:  # the first row fixes the width (and is the header, if any)
        width = len(row)
        header = [c.strip() for c in row] if opts['header'] else None
        text_col = _column(opts['text_column'], 'text', 0, header, path, 'text_column')
        label_col = _column(opts['label_column'], 'label', 1, header, path, 'label_column')
        if max(text_col, label_col) >= width:
          raise DataError(f'{path}: line {line}: column {max(text_col, label_col)} does '
                          f'not exist in rows of {width} columns; set text_column=/'
                          f'label_column= (or delimiter=)')
        if header is not None:
          continue
      if len(row) != width:
        raise DataError(f'{path}: line {line}: expected {width} columns separated by '
                        f'{delim!r}, found {len(row)}; fix the row or quote fields that '
                        f'contain the delimiter')
      label = row[label_col].strip()
      if not label:
        raise DataError(f'{path}: line {line}: the label (column {label_col}) is empty; '
                        f'give the row a label or remove it')
      rows.append((line, row[text_col], label))
  except csv.Error as e:
    raise DataError(f'{path}: line {reader.line_num}: malformed CSV ({e}); fix quoting or '
                    f'set delimiter=') from None
  if not rows:
    raise DataError(f'{path}: file has no data rows; add (text, label) rows after the '
                    f'header')

  # Labels -> 0..C-1.
  labels = [r[2] for r in rows]
  all_int = all(_is_int(lab) for lab in labels)
  if all_int and num_classes is not None:
    label_ids = [int(lab) for lab in labels]
    for (line, _, _), lab in zip(rows, label_ids):
      if not 0 <= lab < num_classes:
        raise DataError(f'{path}: line {line}: label {lab} is outside [0, {num_classes}); '
                        f'fix the label or raise num_classes')
    label_names = [str(i) for i in range(num_classes)]
  else:
    names = sorted(set(labels), key=(lambda s: int(s)) if all_int else None)
    if num_classes is not None and len(names) > num_classes:
      extra = names[num_classes]
      line = next(r[0] for r in rows if r[2] == extra)
      raise DataError(f'{path}: line {line}: label {extra!r} is class number '
                      f'{num_classes + 1} but num_classes={num_classes}; fix the label or '
                      f'raise num_classes')
    index = {n: i for i, n in enumerate(names)}
    label_ids = [index[lab] for lab in labels]
    label_names = names
  classes = num_classes or max(len(label_names), 2)

  val_i, test_i, train_i = carve(len(rows), fracs, seed)
  choice = opts['tokenizer']
  train_texts = [rows[i][1] for i in train_i]
  if isinstance(choice, dict):
    tokenizer = tok.tokenizer_from_dict(choice)
  elif choice == 'byte':
    tokenizer = tok.ByteTokenizer()
  elif choice == 'char':
    tokenizer = tok.CharTokenizer.build(train_texts, allow_unknown=True)
  elif choice == 'word':
    tokenizer = tok.WordTokenizer.build(train_texts, max_vocab=opts['max_vocab'],
                                        min_count=check_int(name, opts, 'min_count', 1))
  else:
    raise ValueError(f'task {name!r}: option tokenizer={choice!r} must be one of '
                     f'{list(tok.TOKENIZERS)} or a saved tokenizer dict')
  examples = []
  for (line, text_value, _), lab in zip(rows, label_ids):
    ids = tokenizer.encode(text_value)
    if len(ids) > max_len:
      if not opts['truncate']:
        raise DataError(f'{path}: line {line}: text has {len(ids)} tokens, more than '
                        f'max_len={max_len}; raise max_len or pass truncate=True')
      ids = ids[:max_len]
    examples.append({'inputs': ids.astype(np.int32), 'label': np.int32(lab)})
  splits = ('train',) + tuple(s for s, f in zip(SPLITS[1:], fracs) if f > 0)
  parts = dict(zip(('validation', 'test', 'train'), (val_i, test_i, train_i)))
  sources = {s: _Examples([examples[i] for i in parts[s]]) for s in splits}
  spec = TaskSpec(name=name, kind='classification', vocab_size=tokenizer.vocab_size,
                  num_classes=classes, max_len=max_len, metrics=('accuracy',),
                  eval_metric='accuracy', eval_metric_larger_is_better=True, splits=splits)
  metadata = {'task': name, 'seed': seed, 'path': path, 'tokenizer': tokenizer.to_dict(),
              'label_names': label_names,
              'options': {k: v for k, v in opts.items() if k != 'tokenizer'},
              'num_examples': {s: len(sources[s]) for s in splits}}
  return Task(spec=spec, open=_StaticOpener(name, sources), metadata=metadata)


def _is_int(s: str) -> bool:
  try:
    int(s)
    return True
  except ValueError:
    return False


text_file.defaults = TEXT_DEFAULTS  # every option the task accepts (registry.task_defaults)
csv_file.defaults = CSV_DEFAULTS
TASKS = {'text_file': text_file, 'csv': csv_file}
