"""Text -> int32 token ids for the real-data and user-file tasks.

Three tokenizers share the reserved ids of ``seqjax.data.spec`` (PAD=0, UNK=1, BOS=2,
EOS=3) and number their own symbols from 4:

* ``ByteTokenizer`` — UTF-8 bytes, id = byte + 4 (vocabulary 260), as in the LRA byte-level
  Text task (Tay et al. 2021): no vocabulary to build or save.
* ``CharTokenizer`` — one id per character seen in the training text (most frequent first),
  e.g. tiny_shakespeare (Karpathy 2015). Unseen characters map to UNK, or raise when built
  with ``allow_unknown=False``.
* ``WordTokenizer`` — lower-cased words and punctuation marks (regex split) seen at least
  ``min_count`` times in the training split, the ``max_vocab`` most frequent kept; others
  map to UNK.

Every tokenizer has ``encode(text) -> int32 [time]``, ``decode(ids) -> str`` (reserved ids
skipped), ``vocab_size`` (including the reserved ids) and ``to_dict()``; rebuild one with
``tokenizer_from_dict(d)``. The dict is JSON-serialisable so the trainer can save it beside
a checkpoint (``Task.metadata['tokenizer']``) and evaluation/generation can reuse it.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Iterable, Sequence

import numpy as np

from seqjax.data.errors import DataError
from seqjax.data.spec import BOS_ID, EOS_ID, PAD_ID, UNK_ID

RESERVED = ('<pad>', '<unk>', '<bos>', '<eos>')
NUM_RESERVED = len(RESERVED)
assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == tuple(range(NUM_RESERVED))

# Words are runs of letters/digits/underscore/apostrophes; every other non-space character
# is its own token (so "don't!" -> ["don't", "!"]).
_WORD_RE = re.compile(r"[\w']+|[^\w\s]")


def _ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
  return np.asarray(ids, dtype=np.int64).reshape(-1)


class ByteTokenizer:
  """UTF-8 bytes -> ids ``byte + 4``; ``vocab_size`` 260."""

  kind = 'byte'

  @property
  def vocab_size(self) -> int:
    return NUM_RESERVED + 256

  def encode(self, text: str | bytes) -> np.ndarray:
    """``text`` (str, or bytes that must be UTF-8) -> int32 ``[num_bytes]``."""
    if isinstance(text, (bytes, bytearray)):
      try:
        bytes(text).decode('utf-8')
      except UnicodeDecodeError as e:
        raise DataError(f'ByteTokenizer.encode: input is not UTF-8 (bad byte at offset '
                        f'{e.start}); decode or re-encode the text as UTF-8') from None
      data = bytes(text)
    else:
      data = text.encode('utf-8')
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + NUM_RESERVED

  def decode(self, ids: Sequence[int] | np.ndarray, errors: str = 'strict') -> str:
    """Ids -> text, skipping reserved ids; ``errors`` as in ``bytes.decode``."""
    ids = _ids(ids)
    ids = ids[ids >= NUM_RESERVED]
    if ids.size and ids.max() >= self.vocab_size:
      raise ValueError(f'ByteTokenizer.decode: id {int(ids.max())} is outside the '
                       f'vocabulary [0, {self.vocab_size})')
    data = (ids - NUM_RESERVED).astype(np.uint8).tobytes()
    try:
      return data.decode('utf-8', errors=errors)
    except UnicodeDecodeError as e:
      raise DataError(f'ByteTokenizer.decode: ids do not form UTF-8 text (bad byte at '
                      f'offset {e.start}); pass errors="replace" to decode anyway') from None

  def to_dict(self) -> dict[str, Any]:
    return {'type': 'byte'}


class _VocabTokenizer:
  """Shared part of the vocabulary tokenizers: symbol list <-> ids."""

  kind = ''

  def __init__(self, vocab: Sequence[str]):
    vocab = list(vocab)
    if len(set(vocab)) != len(vocab):
      raise ValueError(f'{type(self).__name__}: vocabulary has duplicate entries')
    self.vocab = vocab  # symbol of id i + NUM_RESERVED
    self._index = {s: i + NUM_RESERVED for i, s in enumerate(vocab)}

  @property
  def vocab_size(self) -> int:
    return NUM_RESERVED + len(self.vocab)

  def _symbols(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    out = []
    for i in _ids(ids).tolist():
      if i < NUM_RESERVED:
        continue  # padding/BOS/EOS/UNK carry no text
      if i >= self.vocab_size:
        raise ValueError(f'{type(self).__name__}.decode: id {i} is outside the vocabulary '
                         f'[0, {self.vocab_size})')
      out.append(self.vocab[i - NUM_RESERVED])
    return out


def _ranked(counts: collections.Counter, max_vocab: int | None, min_count: int) -> list[str]:
  # Most frequent first; ties broken by the symbol so the vocabulary is deterministic.
  kept = sorted((s for s, c in counts.items() if c >= min_count),
                key=lambda s: (-counts[s], s))
  return kept if max_vocab is None else kept[:max_vocab]


class CharTokenizer(_VocabTokenizer):
  """One id per character of the training text; unseen characters -> UNK (or an error)."""

  kind = 'char'

  def __init__(self, vocab: Sequence[str], allow_unknown: bool = True):
    if any(len(c) != 1 for c in vocab):
      raise ValueError('CharTokenizer: every vocabulary entry must be one character')
    super().__init__(vocab)
    self.allow_unknown = bool(allow_unknown)

  @classmethod
  def build(cls, texts: Iterable[str], allow_unknown: bool = True,
            max_vocab: int | None = None, min_count: int = 1) -> CharTokenizer:
    """The characters of ``texts`` (most frequent first)."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    return cls(_ranked(counts, max_vocab, min_count), allow_unknown=allow_unknown)

  def encode(self, text: str) -> np.ndarray:
    """``text`` -> int32 ``[num_chars]``."""
    index = self._index
    if self.allow_unknown:
      return np.fromiter((index.get(c, UNK_ID) for c in text), np.int32, len(text))
    try:
      return np.fromiter((index[c] for c in text), np.int32, len(text))
    except KeyError as e:
      pos = text.index(e.args[0])
      raise DataError(f'CharTokenizer.encode: character {e.args[0]!r} at position {pos} is '
                      f'not in the vocabulary; build the tokenizer with '
                      f'allow_unknown=True or from text containing it') from None

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return ''.join(self._symbols(ids))

  def to_dict(self) -> dict[str, Any]:
    return {'type': 'char', 'vocab': list(self.vocab), 'allow_unknown': self.allow_unknown}


class WordTokenizer(_VocabTokenizer):
  """Lower-cased words/punctuation from the training split; out-of-vocabulary -> UNK."""

  kind = 'word'

  def __init__(self, vocab: Sequence[str], lowercase: bool = True):
    super().__init__(vocab)
    self.lowercase = bool(lowercase)

  def split(self, text: str) -> list[str]:
    return _WORD_RE.findall(text.lower() if self.lowercase else text)

  @classmethod
  def build(cls, texts: Iterable[str], max_vocab: int | None = 20000, min_count: int = 1,
            lowercase: bool = True) -> WordTokenizer:
    """Vocabulary of ``texts`` (pass the training split only): words seen at least
    ``min_count`` times, the ``max_vocab`` most frequent."""
    if max_vocab is not None and max_vocab < 1:
      raise ValueError(f'WordTokenizer: max_vocab={max_vocab!r} must be >= 1 or None')
    if min_count < 1:
      raise ValueError(f'WordTokenizer: min_count={min_count!r} must be >= 1')
    # Tokens never span whitespace, so the regex runs once per *distinct* whitespace-
    # separated chunk, weighted by its count, instead of over every token of the corpus:
    # the same counts, 2-3x faster on IMDB-sized data (scripts/bench_data.py --only=vocab).
    chunks = collections.Counter()
    for text in texts:
      chunks.update((text.lower() if lowercase else text).split())
    counts = collections.Counter()
    for chunk, n in chunks.items():
      for word in _WORD_RE.findall(chunk):
        counts[word] += n
    return cls(_ranked(counts, max_vocab, min_count), lowercase=lowercase)

  def encode(self, text: str) -> np.ndarray:
    """``text`` -> int32 ``[num_words]`` (unknown words -> UNK)."""
    words = self.split(text)
    index = self._index
    return np.fromiter((index.get(w, UNK_ID) for w in words), np.int32, len(words))

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return ' '.join(self._symbols(ids))

  def to_dict(self) -> dict[str, Any]:
    return {'type': 'word', 'vocab': list(self.vocab), 'lowercase': self.lowercase}


Tokenizer = ByteTokenizer | CharTokenizer | WordTokenizer
TOKENIZERS = ('byte', 'char', 'word')


def lm_metrics(tokenizer: Tokenizer) -> tuple[str, ...]:
  """What a language model over ``tokenizer``'s units reports: token accuracy, perplexity
  and the loss in bits per unit (bits per character is the char-LM convention, e.g.
  Graves 2013; bits per byte for byte LMs). No sequence accuracy: no text is "right"."""
  unit = {'char': 'char', 'byte': 'byte'}.get(tokenizer.kind, 'token')
  return ('token_accuracy', 'perplexity', f'bits_per_{unit}')


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
  """Inverse of ``to_dict()``."""
  kind = d.get('type') if isinstance(d, dict) else None
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'char':
    return CharTokenizer(d['vocab'], allow_unknown=d.get('allow_unknown', True))
  if kind == 'word':
    return WordTokenizer(d['vocab'], lowercase=d.get('lowercase', True))
  raise ValueError(f'tokenizer_from_dict: type={kind!r} is not one of {list(TOKENIZERS)}')
