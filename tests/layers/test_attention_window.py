"""Sliding-window attention (``attention_window``) and shared key/value heads
(``num_kv_heads``) in ``MultiHeadAttention``: the blocked parallel form against a dense
NumPy softmax under the window mask, the ring-buffer cache streaming past its size, the
dependence pattern by gradient, and decoding in constant memory."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.attention import MultiHeadAttention

B, T, D, H = 2, 11, 8, 4
LENGTHS = np.array([T, 6])


def np_attention(p, x, window, causal, kv_heads, lengths):
  """Dense float64 softmax(q k^T / sqrt(d)) v under the window, causal and padding masks."""
  dense = lambda q: x @ q['kernel'] + q['bias']
  dk = D // H
  q = dense(p['w_q']).reshape(B, T, H, dk)
  k = np.repeat(dense(p['w_k']).reshape(B, T, kv_heads, dk), H // kv_heads, axis=2)
  v = np.repeat(dense(p['w_v']).reshape(B, T, kv_heads, dk), H // kv_heads, axis=2)
  s = np.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(dk)
  diff = np.arange(T)[:, None] - np.arange(T)[None]
  ok = (diff < window) & ((diff >= 0) if causal else (diff > -window))
  ok = ok[None, None] & (np.arange(T)[None, None, None] < lengths[:, None, None, None])
  s = np.where(ok, s, -1e300)   # padded queries (ignored) may see no key
  w = np.exp(s - s.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  out = np.einsum('bhqk,bkhd->bqhd', w, v).reshape(B, T, D)
  return out @ p['w_o']['kernel'] + p['w_o']['bias']


def _setup(window, causal, kv_heads, impl='auto'):
  mha = MultiHeadAttention(D, H, causal=causal, attention_window=window,
                           num_kv_heads=kv_heads, max_len=4, impl=impl, attention_chunk=4)
  rng = np.random.default_rng(window)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(mha.init, jax.random.key(0), x)
  params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5, a.dtype),
                        params)
  return mha, params, x


@pytest.mark.parametrize('impl', ['attention:exact', 'attention:chunked'])
@pytest.mark.parametrize('window, causal, kv_heads', [
    (3, True, 1), (4, True, 2), (20, True, 4), (3, False, 1), (1, True, 1)])
def test_blocked_parallel_form_matches_dense_reference(window, causal, kv_heads, impl):
  """Both parallel forms: exact blocks (``local_attention``) and the chunked kernel with
  the window in its loop bounds (blocks of 4 positions)."""
  mha, params, x = _setup(window, causal, kv_heads, impl)
  mask = jnp.asarray(np.arange(T)[None] < LENGTHS[:, None])
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  want = np_attention(p, np.asarray(x, np.float64), window, causal, kv_heads, LENGTHS)
  got = jax.jit(mha.apply)(params, x, mask)  # one program, not op by op
  real = np.arange(T)[None] < LENGTHS[:, None]
  np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=2e-5)


def test_ring_buffer_streams_past_its_size_in_constant_memory():
  """Window 3 over 11 tokens: the ring wraps three times; the cache is [batch, 3, ...]
  whatever max_len is (here 4, shorter than the stream)."""
  mha, params, x = _setup(3, True, 1)
  state = mha.apply(params, B, method='init_state')
  assert state['key'].shape == (B, 3, 1, D // H)

  @jax.jit
  def stream(x):
    step = lambda s, x_t: mha.apply(params, s, x_t, method='step')
    return jax.lax.scan(step, state, jnp.swapaxes(x, 0, 1))

  final, ys = stream(x)
  np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), jax.jit(mha.apply)(params, x),
                             atol=1e-5)
  assert int(final['index']) == T
  assert jax.tree.map(jnp.shape, final) == jax.tree.map(jnp.shape, state)


def test_each_output_depends_exactly_on_its_window():
  mha, params, x = _setup(3, True, 1)
  jac = jax.jit(jax.jacrev(lambda v: mha.apply(params, v)))(x)   # [B, T, D, B, T, D]
  dep = np.abs(np.asarray(jac)[0, :, :, 0]).max(axis=(1, 3))      # [T, T]
  diff = np.arange(T)[:, None] - np.arange(T)[None]
  assert np.all(dep[(diff >= 0) & (diff < 3)] > 0)
  assert np.all(dep[(diff < 0) | (diff >= 3)] == 0)
