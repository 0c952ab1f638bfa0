"""MultiHeadAttention against a NumPy reference with nn.MultiheadAttention semantics."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.attention import MultiHeadAttention, mha_params_from_torch

RNG = np.random.default_rng(0)
B, T, D, H = 2, 6, 8, 2


def torch_layout_weights(d=D, rng=RNG):
  """Random weights named and shaped like nn.MultiheadAttention's state dict."""
  return {'in_proj_weight': rng.standard_normal((3 * d, d)) / math.sqrt(d),
          'in_proj_bias': rng.standard_normal(3 * d) * 0.1,
          'out_proj.weight': rng.standard_normal((d, d)) / math.sqrt(d),
          'out_proj.bias': rng.standard_normal(d) * 0.1}


def np_mha(w, x, num_heads, key_mask=None, causal=False, rope_base=None):
  """Multi-head self-attention as nn.MultiheadAttention computes it, in float64.

  ``key_mask``: [batch, time], True = real (PyTorch's key_padding_mask is its negation).
  Returns (output [batch, time, d], per-head weights [batch, heads, time, time]).
  """
  x = np.asarray(x, np.float64)
  b, t, d = x.shape
  dk = d // num_heads
  proj = x @ w['in_proj_weight'].T + w['in_proj_bias']  # [b, t, 3d]
  q, k, v = (proj[..., i * d:(i + 1) * d].reshape(b, t, num_heads, dk)
             for i in range(3))
  if rope_base is not None:  # rotate-half RoPE at positions 0..t-1
    ang = np.arange(t)[:, None] * rope_base ** (-np.arange(0, dk, 2) / dk)
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    rot = lambda a: np.concatenate([a[..., :dk // 2] * cos - a[..., dk // 2:] * sin,
                                    a[..., dk // 2:] * cos + a[..., :dk // 2] * sin], -1)
    q, k = rot(q), rot(k)
  q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
  scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dk)
  allowed = np.ones((b, 1, t, t), bool)
  if key_mask is not None:
    allowed &= np.asarray(key_mask, bool)[:, None, None, :]
  if causal:
    allowed &= np.tril(np.ones((t, t), bool))
  scores = np.where(allowed, scores, -np.inf)
  scores -= scores.max(-1, keepdims=True)
  weights = np.exp(scores)
  weights /= weights.sum(-1, keepdims=True)
  out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
  return out @ w['out_proj.weight'].T + w['out_proj.bias'], weights


@functools.lru_cache(maxsize=None)
def jitted(causal, rope, max_len=None, dropout=0.0):
  """One compiled forward / streaming function per configuration."""
  mha = MultiHeadAttention(D, H, causal=causal, rope=rope, max_len=max_len,
                           dropout=dropout)
  fwd = jax.jit(lambda p, x, m: mha.apply(p, x, m, return_weights=True))

  @jax.jit
  def stream(p, x):
    state = mha.apply(p, x.shape[0], method='init_state')
    step = lambda s, x_t: mha.apply(p, s, x_t, method='step')
    state, ys = jax.lax.scan(step, state, jnp.swapaxes(x, 0, 1))
    return state, jnp.swapaxes(ys, 0, 1)

  return mha, fwd, stream


def _params(w):
  return {'params': mha_params_from_torch(w)}


@pytest.mark.parametrize('causal', [False, True])
def test_matches_torch_reference_with_and_without_padding(causal):
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  key_mask = np.array([[True] * T, [True] * 4 + [False] * (T - 4)])
  _, fwd, _ = jitted(causal, False)
  for m in (None, key_mask):
    y, weights = fwd(_params(w), x, m)
    ref_y, ref_w = np_mha(w, x, H, m, causal)
    np.testing.assert_allclose(y, ref_y, atol=1e-5)
    np.testing.assert_allclose(weights, ref_w, atol=1e-5)
    if m is not None:  # padded keys get exactly zero weight from every query
      assert np.all(np.asarray(weights)[1, :, :, 4:] == 0.0)


def test_rope_matches_reference_and_weights_are_sown():
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  mha, fwd, _ = jitted(True, True)
  y, weights = fwd(_params(w), x, None)
  ref_y, ref_w = np_mha(w, x, H, causal=True, rope_base=10000.0)
  np.testing.assert_allclose(y, ref_y, atol=1e-5)
  np.testing.assert_allclose(weights, ref_w, atol=1e-5)
  y2, inter = jax.jit(lambda p, x: mha.apply(p, x, mutable=['intermediates']))(
      _params(w), x)
  np.testing.assert_allclose(y2, y, atol=1e-6)
  np.testing.assert_allclose(inter['intermediates']['attention_weights'][0], weights,
                             atol=1e-6)


def test_converter_layout_and_errors():
  w = torch_layout_weights()
  p = mha_params_from_torch(w)
  np.testing.assert_allclose(p['w_k']['kernel'], w['in_proj_weight'][D:2 * D].T, rtol=1e-6)
  np.testing.assert_allclose(p['w_v']['bias'], w['in_proj_bias'][2 * D:], rtol=1e-6)
  # The converted tree has exactly the module's own parameter structure and shapes.
  shapes = lambda m: jax.eval_shape(m.init, jax.random.key(0),
                                    jnp.zeros((1, 2, D)))['params']
  init = shapes(MultiHeadAttention(D, H))
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, p)
  no_bias = MultiHeadAttention(D, H, use_bias=False)
  init_nb = shapes(no_bias)
  w_nb = {k: v for k, v in w.items() if 'bias' not in k}
  assert (jax.tree.map(np.shape, init_nb)
          == jax.tree.map(np.shape, mha_params_from_torch(w_nb, use_bias=False)))
  with pytest.raises(ValueError, match='out_proj.bias'):
    mha_params_from_torch({k: v for k, v in w.items() if k != 'out_proj.bias'})
  with pytest.raises(ValueError, match='in_proj_weight'):
    mha_params_from_torch({**w, 'in_proj_weight': w['in_proj_weight'][:-1]})
  with pytest.raises(ValueError, match='out_proj.weight'):
    mha_params_from_torch({**w, 'out_proj.weight': w['out_proj.weight'][:, :-1]})


def test_causality_by_perturbation():
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  _, fwd, _ = jitted(True, True)
  y = np.asarray(fwd(_params(w), x, None)[0])
  for t in (1, 3, T - 1):
    x2 = x.copy()
    x2[:, t] += RNG.standard_normal((B, D)).astype(np.float32)
    y2 = np.asarray(fwd(_params(w), x2, None)[0])
    np.testing.assert_array_equal(y2[:, :t], y[:, :t])
    assert np.all(np.abs(y2[:, t:] - y[:, t:]).max(-1) > 1e-4)


@pytest.mark.parametrize('rope', [False, True])
def test_streaming_equals_parallel(rope):
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  _, fwd, stream = jitted(True, rope, max_len=T + 3)  # cache longer than the sequence
  state, ys = stream(_params(w), x)
  np.testing.assert_allclose(ys, fwd(_params(w), x, None)[0], atol=1e-5)
  assert int(state['index']) == T
  assert state['key'].shape == (B, T + 3, H, D // H)
  # Cache slots never written are still zero: the mask kept them out of attention.
  assert np.all(np.asarray(state['key'])[:, T:] == 0)


def test_streaming_compile_size_does_not_grow_with_length():
  w = torch_layout_weights()
  _, _, stream = jitted(True, True, max_len=64)
  sizes = [len(stream.lower(_params(w), jnp.zeros((1, t, D))).as_text()) for t in (8, 64)]
  assert abs(sizes[1] - sizes[0]) / sizes[0] < 0.1


def test_streaming_errors():
  x = jnp.zeros((1, T, D))
  with pytest.raises(NotImplementedError, match='not causal'):
    MultiHeadAttention(D, H, causal=False, max_len=8).apply({}, 1, method='init_state')
  with pytest.raises(ValueError, match='max_len'):
    MultiHeadAttention(D, H).apply({}, 1, method='init_state')
  with pytest.raises(ValueError, match='num_heads'):
    MultiHeadAttention(D, 3).init(jax.random.key(0), x)
  assert MultiHeadAttention(D, H).is_causal and not MultiHeadAttention(
      D, H, causal=False).is_causal


def test_padding_invariance_non_causal():
  """Appending padded keys (any values) leaves outputs at real positions unchanged."""
  w = torch_layout_weights()
  lengths = [T, 4]
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  padded = np.concatenate([x, 10 * RNG.standard_normal((B, 3, D)).astype(np.float32)], 1)
  mask = np.arange(T + 3)[None] < np.array(lengths)[:, None]
  _, fwd, _ = jitted(False, False)
  y_pad = np.asarray(fwd(_params(w), padded, mask)[0])
  for b, n in enumerate(lengths):
    y_alone = np.asarray(fwd(_params(w), x[b:b + 1, :n], None)[0])
    np.testing.assert_allclose(y_pad[b:b + 1, :n], y_alone, atol=1e-5)
  assert np.all(np.isfinite(y_pad))


def test_attention_dropout_only_in_training():
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  mha = MultiHeadAttention(D, H, dropout=0.5)
  run = jax.jit(lambda p, x, key: (
      mha.apply(p, x),
      mha.apply(p, x, deterministic=False, return_weights=True, rngs={'dropout': key})))
  # An rbg key: threefry's random-bits kernel compiles several times slower on CPU.
  y_eval, (y_train, w_train) = run(_params(w), x, jax.random.key(1, impl='rbg'))
  ref_y, ref_w = np_mha(w, x, H, causal=True)
  np.testing.assert_allclose(y_eval, ref_y, atol=1e-5)
  np.testing.assert_allclose(w_train, ref_w, atol=1e-5)  # weights are pre-dropout
  assert np.abs(np.asarray(y_train) - ref_y).max() > 1e-3
