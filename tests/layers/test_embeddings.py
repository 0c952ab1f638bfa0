"""PositionalEncoding: parallel additions match the tables; streaming `at` matches rows."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.embeddings import PositionalEncoding

RNG = np.random.default_rng(0)
B, T, D, MAX_LEN = 2, 6, 10, 12


@functools.lru_cache(maxsize=None)
def build(kind):
  pe = PositionalEncoding(kind, MAX_LEN, D)
  params = jax.jit(pe.init)(jax.random.key(0), jnp.zeros((1, T, D)))
  fwd = jax.jit(lambda p, x: pe.apply(p, x))
  at = jax.jit(lambda p, x_t, i: pe.apply(p, x_t, i, method='at'))
  return pe, params, fwd, at


def np_expected(kind, params, x):
  if kind == 'sinusoidal':
    table = np.array([[math.sin(p / 10000 ** ((j - j % 2) / D)) if j % 2 == 0 else
                       math.cos(p / 10000 ** ((j - j % 2) / D)) for j in range(D)]
                      for p in range(x.shape[1])])
  elif kind == 'learned':
    table = np.asarray(params['params']['embedding'])[:x.shape[1]]
  else:
    table = 0.0
  return x + table


@pytest.mark.parametrize('kind', ['sinusoidal', 'learned', 'none', 'rope'])
def test_parallel_adds_table_and_at_matches_rows(kind):
  _, params, fwd, at = build(kind)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  y = np.asarray(fwd(params, x))
  np.testing.assert_allclose(y, np_expected(kind, params, x), atol=1e-6)
  for p in range(T):  # one compiled `at`, traced position
    np.testing.assert_allclose(at(params, x[:, p], jnp.int32(p)), y[:, p], atol=1e-6)


def test_learned_table_init_and_length_check():
  _, params, fwd, _ = build('learned')
  table = np.asarray(params['params']['embedding'])
  assert table.shape == (MAX_LEN, D)
  assert 0.01 < table.std() < 0.03  # normal(0.02)
  pe = PositionalEncoding('learned', MAX_LEN, D)
  with pytest.raises(ValueError, match='max_len'):
    pe.apply(params, jnp.zeros((1, MAX_LEN + 1, D)))
  with pytest.raises(ValueError, match='kind'):
    PositionalEncoding('alibi', MAX_LEN, D).init(jax.random.key(0), jnp.zeros((1, 2, D)))


def test_dropout_applies_only_in_training():
  pe = PositionalEncoding('sinusoidal', MAX_LEN, D, dropout=0.5)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  run = jax.jit(lambda x, key: (
      pe.apply({}, x), pe.apply({}, x, deterministic=False, rngs={'dropout': key})))
  y_eval, y = run(x, jax.random.key(0, impl='rbg'))  # rbg compiles faster
  ref = np_expected('sinusoidal', {}, x)
  kept = np.asarray(y) != 0
  assert 0.2 < kept.mean() < 0.8
  np.testing.assert_allclose(np.asarray(y)[kept], 2 * ref[kept], atol=1e-5)
  np.testing.assert_allclose(y_eval, ref, atol=1e-6)
