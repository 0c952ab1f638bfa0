"""Chunked (online-softmax) attention against a float64 NumPy reference and the exact path.

Properties: outputs and gradients (custom VJP) equal softmax(QKᵀ/√d)V and its textbook
gradient to 1e-5 in float32 for causal / key-padding / offset masks and block sizes that do
not divide the length; fully masked rows give zeros and no NaN; the layer and the model
config select it and agree with the exact implementation; its compiled temporary memory
grows linearly (not quadratically) with length; no loop is unrolled.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.attention import MultiHeadAttention
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model
from seqjax.ops.attention import attend, make_attention_mask, scaled_dot_product_attention
from seqjax.ops.chunked_attention import chunked_attention

RNG = np.random.default_rng(7)
TOL = 1e-5


def np_attention_and_grads(q, k, v, d_out, allowed):
  """Attention and its VJP in float64 from the definitions.

  ``allowed`` ``[b, h|1, t_q, t_k]`` bool. Rows with no allowed key output 0 (and get 0
  gradient), the seqjax convention. Returns ``(out, dq, dk, dv)`` for cotangent ``d_out``.
  """
  q, k, v, d_out = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
  scale = 1.0 / math.sqrt(q.shape[-1])
  s = q @ np.swapaxes(k, -1, -2) * scale
  allowed = np.broadcast_to(allowed, s.shape)
  s = np.where(allowed, s, -np.inf)
  row_max = np.max(s, axis=-1, keepdims=True)
  row_max = np.where(np.isfinite(row_max), row_max, 0.0)
  e = np.where(allowed, np.exp(s - row_max), 0.0)
  denom = e.sum(-1, keepdims=True)
  p = e / np.where(denom > 0, denom, 1.0)
  out = p @ v
  # Softmax Jacobian: dS = P ∘ (dP - rowsum(P ∘ dP)).
  dv = np.swapaxes(p, -1, -2) @ d_out
  dp = d_out @ np.swapaxes(v, -1, -2)
  ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
  dq = ds @ k * scale
  dk = np.swapaxes(ds, -1, -2) @ q * scale
  return out, dq, dk, dv


def np_allowed(b, t_q, t_k, key_mask, causal, offset=0, window=0):
  allowed = np.ones((b, 1, t_q, t_k), bool)
  if key_mask is not None:
    allowed &= np.asarray(key_mask, bool)[:, None, None, :]
  diff = offset + np.arange(t_q)[:, None] - np.arange(t_k)[None, :]
  if causal:
    allowed &= diff >= 0
  if window:
    allowed &= np.abs(diff) < window
  return allowed


def random_qkv(b, h, t_q, t_k, d):
  f = lambda *s: jnp.asarray(RNG.standard_normal(s), jnp.float32)
  return f(b, h, t_q, d), f(b, h, t_k, d), f(b, h, t_k, d), f(b, h, t_q, d)


@functools.partial(jax.jit, static_argnames=('causal', 'offset', 'block_q', 'block_k',
                                             'window'))
def chunked_vjp(q, k, v, d_out, **kw):
  out, pullback = jax.vjp(lambda q, k, v: chunked_attention(q, k, v, **kw), q, k, v)
  return (out, *pullback(d_out))


KEY_MASK = np.array([[True] * 9 + [False] * 4,     # right padding
                     [False] * 13,                 # nothing to attend to: zero rows
                     [True] * 13])


@pytest.mark.parametrize('causal, key_mask, t_q, t_k, offset, block_q, block_k', [
    (True, None, 13, 13, 0, 4, 4),          # causal, blocks do not divide T
    (True, KEY_MASK, 13, 13, 0, 4, 3),      # causal + padding + fully masked sequence
    (False, KEY_MASK, 13, 13, 0, 8, 4),     # bidirectional with padding
    (True, None, 5, 13, 8, 2, 4),           # queries at positions 8..12 (a cache suffix)
    (True, None, 7, 13, -2, 3, 5),          # first queries see no key at all
    (False, None, 6, 10, 0, 64, 64),        # one block larger than the sequence
])
def test_matches_numpy_reference(causal, key_mask, t_q, t_k, offset, block_q, block_k):
  b, h, d = 3, 2, 8
  q, k, v, d_out = random_qkv(b, h, t_q, t_k, d)
  km = None if key_mask is None else jnp.asarray(key_mask)
  got = chunked_vjp(q, k, v, d_out, key_mask=km, causal=causal, offset=offset,
                    block_q=block_q, block_k=block_k)
  want = np_attention_and_grads(q, k, v, d_out,
                                np_allowed(b, t_q, t_k, key_mask, causal, offset))
  for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, w, atol=TOL, rtol=TOL, err_msg=name)


@pytest.mark.parametrize('causal, key_mask, t_q, t_k, offset, block_q, block_k, window', [
    (True, None, 13, 13, 0, 4, 4, 3),        # Griffin's local attention, window < block
    (True, KEY_MASK, 13, 13, 0, 4, 3, 5),    # window > block, padding, an empty sequence
    (True, None, 13, 13, 0, 2, 2, 1),        # each query sees itself only
    (False, KEY_MASK, 13, 13, 0, 4, 4, 3),   # bidirectional window: |i - j| < W
    (False, None, 13, 13, 0, 2, 5, 6),       # unequal blocks
    (True, None, 5, 13, 8, 2, 4, 4),         # queries at 8..12 over a cache
])
def test_sliding_window_matches_numpy_reference(causal, key_mask, t_q, t_k, offset, block_q,
                                                block_k, window):
  """Only the blocks that overlap the window are visited (the loop bounds): a bound one
  block too narrow drops allowed keys, and the reference tells."""
  b, h, d = 3, 2, 8
  q, k, v, d_out = random_qkv(b, h, t_q, t_k, d)
  km = None if key_mask is None else jnp.asarray(key_mask)
  got = chunked_vjp(q, k, v, d_out, key_mask=km, causal=causal, offset=offset,
                    block_q=block_q, block_k=block_k, window=window)
  want = np_attention_and_grads(q, k, v, d_out,
                                np_allowed(b, t_q, t_k, key_mask, causal, offset, window))
  for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, w, atol=TOL, rtol=TOL, err_msg=name)


def test_fully_masked_rows_are_zero_like_exact_path():
  """A sequence with no real key: zero output and zero gradients, exactly, as exact."""
  q, k, v, d_out = random_qkv(3, 2, 13, 13, 8)
  km = jnp.asarray(KEY_MASK)
  out, dq, dk, dv = chunked_vjp(q, k, v, d_out, key_mask=km, causal=True,
                                block_q=4, block_k=4)
  for a in (out, dq, dk, dv):
    assert np.all(np.asarray(a[1]) == 0.0)
  # Padded keys of sequence 0 receive no gradient.
  assert np.all(np.asarray(dk[0, :, 9:]) == 0.0) and np.all(np.asarray(dv[0, :, 9:]) == 0.0)


def test_agrees_with_exact_path_through_attend():
  """The dispatcher's two implementations: same values and same gradients."""
  q, k, v, d_out = random_qkv(3, 2, 13, 13, 8)
  km = jnp.asarray(KEY_MASK)

  @functools.partial(jax.jit, static_argnums=0)
  def vjp(impl):
    f = lambda q, k, v: attend(q, k, v, key_mask=km, causal=True, impl=impl, chunk_size=4)
    out, pullback = jax.vjp(f, q, k, v)
    return (out, *pullback(d_out))

  for e, c in zip(vjp('exact'), vjp('chunked')):
    np.testing.assert_allclose(c, e, atol=TOL, rtol=TOL)
  # attend('exact') is the same computation as the public exact function.
  mask = make_attention_mask(km, causal=True, t_q=13)
  np.testing.assert_allclose(vjp('exact')[0], scaled_dot_product_attention(q, k, v, mask)[0],
                             atol=1e-6)
  with pytest.raises(ValueError, match='impl'):
    attend(q, k, v, impl='flash')


def test_layer_chunked_equals_exact_with_param_gradients():
  d, heads, t = 16, 4, 12
  x = jnp.asarray(RNG.standard_normal((2, t, d)), jnp.float32)
  mask = jnp.asarray(np.arange(t)[None, :] < np.array([[t], [7]]))
  exact = MultiHeadAttention(d, heads, causal=True, rope=True)
  chunked = MultiHeadAttention(d, heads, causal=True, rope=True,
                               impl='attention:chunked', attention_chunk=5)
  # One compiled initialiser: run eagerly, every operation compiles on its own.
  params = jax.jit(exact.init)(jax.random.PRNGKey(0), x)['params']
  weight = jnp.asarray(RNG.standard_normal((2, t, d)), jnp.float32) * mask[..., None]

  def loss(module, params):
    return jnp.sum(module.apply({'params': params}, x, mask) * weight)

  l_e, g_e = jax.jit(jax.value_and_grad(lambda p: loss(exact, p)))(params)
  l_c, g_c = jax.jit(jax.value_and_grad(lambda p: loss(chunked, p)))(params)
  np.testing.assert_allclose(l_c, l_e, rtol=TOL)
  for a, b in zip(jax.tree_util.tree_leaves(g_c), jax.tree_util.tree_leaves(g_e)):
    np.testing.assert_allclose(a, b, atol=TOL, rtol=TOL)

  with pytest.raises(ValueError, match='return_weights'):
    chunked.apply({'params': params}, x, return_weights=True)
  with pytest.raises(ValueError, match=r'attention:flash is not valid; choose '
                                       r'attention:exact \| chunked'):
    MultiHeadAttention(d, heads, impl='attention:flash').init(jax.random.PRNGKey(0), x)


def test_model_config_selects_chunked_attention():
  base = ModelConfig(model='transformer', head='lm', vocab_size=11, d_model=16,
                     num_heads=2, num_layers=1, max_len=32)
  tokens = jnp.asarray(RNG.integers(1, 11, (2, 10)), jnp.int32)
  exact_model = build_model(base)
  chunked_model = build_model(base.replace(impl='attention:chunked', attention_chunk=4))
  params = jax.jit(exact_model.init)(jax.random.PRNGKey(1), tokens)['params']
  both = jax.jit(lambda p, x: (chunked_model.apply({'params': p}, x),
                               exact_model.apply({'params': p}, x)))
  np.testing.assert_allclose(*both(params, tokens), atol=TOL, rtol=TOL)
  with pytest.raises(ValueError, match='attention:flash'):
    base.replace(impl='attention:flash')
  with pytest.raises(ValueError, match='attention_chunk'):
    base.replace(attention_chunk=0)


def _grad_fn(t, block):
  def loss(q, k, v):
    return jnp.sum(chunked_attention(q, k, v, causal=True, block_q=block, block_k=block))
  shape = jax.ShapeDtypeStruct((1, 1, t, 8), jnp.float32)
  return jax.jit(jax.grad(loss, (0, 1, 2))).lower(shape, shape, shape)


def test_memory_linear_and_no_unrolled_loops():
  """8x longer: program text the same size; temp memory ~8x (linear), not ~64x."""
  small, large = _grad_fn(128, 32), _grad_fn(1024, 32)
  n_small, n_large = len(small.as_text()), len(large.as_text())
  assert abs(n_large - n_small) <= 0.1 * n_small
  mem = lambda lowered: lowered.compile().memory_analysis().temp_size_in_bytes
  ratio = mem(large) / mem(small)
  assert ratio < 12, ratio   # the exact path's [t, t] weights would give ~64
