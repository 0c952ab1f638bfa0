"""Properties of seqjax.ops.positions: sinusoidal table and RoPE."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops import positions as pos_ops

RNG = np.random.default_rng(0)


def np_sinusoidal(max_len, d_model):
  """The article's formula, one entry at a time in float64."""
  pe = np.zeros((max_len, d_model))
  for p in range(max_len):
    for j in range(d_model):
      two_i = j - (j % 2)
      angle = p / 10000.0 ** (two_i / d_model)
      pe[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
  return pe


@pytest.mark.parametrize('max_len,d_model', [(50, 16), (2000, 6), (9, 7)])
def test_sinusoidal_table_matches_formula(max_len, d_model):
  table = pos_ops.sinusoidal_positions(max_len, d_model)
  assert table.dtype == jnp.float32
  np.testing.assert_allclose(table, np_sinusoidal(max_len, d_model), atol=1e-6)


def test_sinusoidal_rejects_bad_sizes():
  with pytest.raises(ValueError, match='d_model'):
    pos_ops.sinusoidal_positions(4, 0)


def np_rope(x, positions, base=10000.0):
  """Rotate-half RoPE in float64: pair (i, i + d/2) rotated by position * base^(-2i/d)."""
  x = np.asarray(x, np.float64)
  d = x.shape[-1]
  out = np.empty_like(x)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      for i in range(d // 2):
        a = positions[t] * base ** (-2 * i / d)
        c, s = math.cos(a), math.sin(a)
        x1, x2 = x[b, t, :, i], x[b, t, :, i + d // 2]
        out[b, t, :, i] = x1 * c - x2 * s
        out[b, t, :, i + d // 2] = x2 * c + x1 * s
  return out


rope = jax.jit(pos_ops.apply_rope, static_argnames='base')


def test_rope_matches_numpy_reference():
  x = RNG.standard_normal((2, 6, 3, 8)).astype(np.float32)
  positions = np.array([0, 1, 2, 5, 11, 30])
  np.testing.assert_allclose(rope(x, positions), np_rope(x, positions), atol=1e-5)
  np.testing.assert_allclose(rope(x, positions, base=500.0),
                             np_rope(x, positions, base=500.0), atol=1e-5)
  np.testing.assert_allclose(
      pos_ops.rope_frequencies(8), 10000.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
  head_dim = 16
  q = RNG.standard_normal((1, 1, 1, head_dim)).astype(np.float32)
  k = RNG.standard_normal((1, 1, 1, head_dim)).astype(np.float32)
  m = np.arange(0, 48)
  # Rotate one q and one k to every position at once (time axis = position).
  q_rot = np.asarray(rope(np.broadcast_to(q, (1, 48, 1, head_dim)), m))[0, :, 0]
  k_rot = np.asarray(rope(np.broadcast_to(k, (1, 48, 1, head_dim)), m))[0, :, 0]
  scores = q_rot @ k_rot.T  # scores[m, n] = <rope(q, m), rope(k, n)>
  for delta in (-7, -1, 0, 3, 20):
    pairs = [(a, a - delta) for a in range(48) if 0 <= a - delta < 48]
    assert len(pairs) >= 20
    vals = np.array([scores[a, b] for a, b in pairs])
    np.testing.assert_allclose(vals, vals[0], atol=2e-5)
  # ... and genuinely on the difference: different offsets give different scores.
  assert abs(scores[5, 5] - scores[5, 2]) > 1e-3


def test_rope_preserves_norms_and_position_zero_is_identity():
  x = RNG.standard_normal((2, 5, 3, 8)).astype(np.float32)
  positions = np.array([0, 3, 17, 100, 999])
  y = np.asarray(rope(x, positions))
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1),
                             rtol=1e-5)
  np.testing.assert_allclose(y[:, 0], x[:, 0], atol=0)


def test_rope_per_batch_positions_and_traced_scalar():
  x = RNG.standard_normal((2, 4, 2, 8)).astype(np.float32)
  positions = np.array([[0, 1, 2, 3], [5, 6, 7, 8]])
  y = np.asarray(rope(x, positions))
  for b in range(2):
    np.testing.assert_allclose(y[b:b + 1], rope(x[b:b + 1], positions[b]), atol=1e-6)
  # A single decoding step: positions [1] holding a traced index.
  step = jax.jit(lambda x, i: pos_ops.apply_rope(x, i[None]))
  np.testing.assert_allclose(step(x[:, 2:3], jnp.int32(7)), rope(x[:, 2:3], np.array([7])),
                             atol=1e-6)


def test_rope_rejects_odd_head_dim():
  with pytest.raises(ValueError, match='head_dim'):
    pos_ops.apply_rope(jnp.ones((1, 2, 1, 5)), jnp.arange(2))
