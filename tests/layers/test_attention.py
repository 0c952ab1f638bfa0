"""MultiHeadAttention against a NumPy reference with nn.MultiheadAttention semantics.

Causality, padding, streaming and compile size are the mixer contract's
(tests/layers/test_mixer_contract.py); this file keeps what is special to attention:
the PyTorch layout, RoPE, the KV cache and attention-weight dropout."""

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
  """One compiled forward function per configuration."""
  mha = MultiHeadAttention(D, H, causal=causal, rope=rope, max_len=max_len,
                           dropout=dropout)
  return mha, jax.jit(lambda p, x, m: mha.apply(p, x, m, return_weights=True))


def _params(w):
  return {'params': mha_params_from_torch(w)}


@pytest.mark.parametrize('causal', [False, True])
def test_matches_torch_reference_with_and_without_padding(causal):
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  key_mask = np.array([[True] * T, [True] * 4 + [False] * (T - 4)])
  _, fwd = jitted(causal, False)
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
  mha, fwd = jitted(True, True)
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
  # Keys that change the function (add_bias_kv=True) are refused, not dropped.
  with pytest.raises(ValueError, match=r"\['bias_k', 'bias_v'\] have no counterpart"):
    mha_params_from_torch({**w, 'bias_k': np.zeros((1, 1, D)), 'bias_v': np.zeros((1, 1, D))})
  with pytest.raises(ValueError, match='in_proj_bias'):
    mha_params_from_torch(w, use_bias=False)


def test_rope_streams_through_a_kv_cache_longer_than_the_sequence(stream):
  w = torch_layout_weights()
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  mha, fwd = jitted(True, True, max_len=T + 3)
  state, ys = jax.jit(lambda p, x: stream(mha, p, x))(_params(w), x)
  np.testing.assert_allclose(ys, fwd(_params(w), x, None)[0], atol=1e-5)
  assert int(state['index']) == T
  assert state['key'].shape == (B, T + 3, H, D // H)
  # Cache slots never written are still zero: the mask kept them out of attention.
  assert np.all(np.asarray(state['key'])[:, T:] == 0)


def test_streaming_errors():
  x = jnp.zeros((1, T, D))
  with pytest.raises(ValueError, match='max_len'):
    MultiHeadAttention(D, H).apply({}, 1, method='init_state')
  with pytest.raises(ValueError, match='num_heads'):
    MultiHeadAttention(D, 3).init(jax.random.key(0), x)
  assert MultiHeadAttention(D, H).is_causal and not MultiHeadAttention(
      D, H, causal=False).is_causal


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
