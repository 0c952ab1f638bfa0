"""Tokenizers: round trips, reserved ids, vocabularies vs. a Counter reference, JSON, errors."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest

from seqjax.data import tokenizers as tok
from seqjax.data.errors import DataError
from seqjax.data.spec import BOS_ID, EOS_ID, PAD_ID, UNK_ID

TEXT = 'Héllo, wörld! 你好 🙂\nthe cat sat on the mat.'


def test_byte_ids_are_utf8_bytes_past_reserved():
  t = tok.ByteTokenizer()
  ids = t.encode(TEXT)
  ref = np.array(list(TEXT.encode('utf-8')), np.int64) + 4
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, ref)
  assert t.vocab_size == 260 and ids.min() >= 4 and ids.max() < t.vocab_size
  assert t.decode(ids) == TEXT
  # Reserved ids carry no text and are skipped.
  noisy = np.concatenate([[BOS_ID], ids[:3], [PAD_ID, UNK_ID], ids[3:], [EOS_ID, PAD_ID]])
  assert t.decode(noisy) == TEXT
  assert t.decode(t.encode(TEXT.encode('utf-8'))) == TEXT  # bytes in


def test_byte_non_utf8_errors():
  t = tok.ByteTokenizer()
  with pytest.raises(DataError, match='not UTF-8.*offset 1'):
    t.encode(b'a\xff')
  bad = np.array([ord('a') + 4, 0xC3 + 4], np.int32)  # truncated 2-byte sequence
  with pytest.raises(DataError, match='errors="replace"'):
    t.decode(bad)
  assert t.decode(bad, errors='replace') == 'a\ufffd'
  with pytest.raises(ValueError, match='outside the vocabulary'):
    t.decode([300])


def test_char_vocab_by_frequency_and_unknowns():
  train = ['abracadabra', 'cab']
  t = tok.CharTokenizer.build(train)
  counts = collections.Counter(''.join(train))
  ref = sorted(counts, key=lambda c: (-counts[c], c))
  assert t.vocab == ref and t.vocab_size == 4 + len(ref)
  ids = t.encode('abcd')
  np.testing.assert_array_equal(ids, [4 + ref.index('a'), 4 + ref.index('b'),
                                      4 + ref.index('c'), 4 + ref.index('d')])
  assert t.decode(t.encode('dabba')) == 'dabba'
  np.testing.assert_array_equal(t.encode('zq'), [UNK_ID, UNK_ID])
  assert t.decode(t.encode('azb')) == 'ab'  # UNK is reserved: skipped by decode

  strict = tok.CharTokenizer.build(train, allow_unknown=False)
  with pytest.raises(DataError) as err:
    strict.encode('abz')
  msg = str(err.value)
  assert "'z'" in msg and 'position 2' in msg and 'allow_unknown=True' in msg
  assert '\n' not in msg


def test_word_vocab_from_training_split_only():
  train = ['The cat sat.', 'the CAT ran, the dog sat!', "don't stop"]
  valid = ['the zebra sat']
  t = tok.WordTokenizer.build(train, max_vocab=5, min_count=2)
  words = [w for s in train for w in re.findall(r"[\w']+|[^\w\s]", s.lower())]
  counts = collections.Counter(words)
  ref = sorted((w for w in counts if counts[w] >= 2), key=lambda w: (-counts[w], w))[:5]
  assert t.vocab == ref
  ids = t.encode(valid[0])
  # 'zebra' never occurs in the training split: UNK, even though it is in validation.
  np.testing.assert_array_equal(ids, [4 + ref.index('the'), UNK_ID, 4 + ref.index('sat')])
  assert t.decode(t.encode('THE cat SAT')) == 'the cat sat'
  full = tok.WordTokenizer.build(train, max_vocab=None)
  assert "don't" in full.vocab and '!' in full.vocab and ',' in full.vocab
  with pytest.raises(ValueError, match='max_vocab'):
    tok.WordTokenizer.build(train, max_vocab=0)
  with pytest.raises(ValueError, match='min_count'):
    tok.WordTokenizer.build(train, min_count=0)


@pytest.mark.parametrize('make', [
    tok.ByteTokenizer,
    lambda: tok.CharTokenizer.build([TEXT], allow_unknown=False),
    lambda: tok.WordTokenizer.build([TEXT], max_vocab=7),
])
def test_json_round_trip(make):
  t = make()
  d = json.loads(json.dumps(t.to_dict()))
  u = tok.tokenizer_from_dict(d)
  assert type(u) is type(t) and u.vocab_size == t.vocab_size
  np.testing.assert_array_equal(u.encode(TEXT), t.encode(TEXT))
  assert u.decode(u.encode(TEXT)) == t.decode(t.encode(TEXT))
  assert u.to_dict() == t.to_dict()


def test_from_dict_errors():
  with pytest.raises(ValueError, match="type='bpe' is not one of"):
    tok.tokenizer_from_dict({'type': 'bpe'})
  with pytest.raises(ValueError, match='duplicate'):
    tok.tokenizer_from_dict({'type': 'word', 'vocab': ['a', 'a']})


def test_word_vocabulary_counts_equal_a_per_token_count():
  """The fast build (regex per distinct whitespace chunk) counts exactly what splitting
  every text would: odd Unicode spaces, apostrophes, underscores, a final sigma."""
  import collections
  rng = np.random.default_rng(0)
  alphabet = list("abcΣσς'_!.,-") + [' ', '\n', '\t', '\u00a0', '\u2003', '\x1c', '\x85']
  texts = [''.join(rng.choice(alphabet, size=int(rng.integers(0, 60)))) for _ in range(300)]
  texts += ['ΟΔΟΣ ΟΔΟΣ.', "don't!  DON'T", 'snake_case\u00a0word']
  built = tok.WordTokenizer.build(texts, max_vocab=None)
  counts = collections.Counter(w for t in texts for w in built.split(t))
  ref = sorted(counts, key=lambda w: (-counts[w], w))
  assert built.vocab == ref
