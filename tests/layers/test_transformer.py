"""TransformerBlock: a NumPy pre-LN reference, causality, streaming == parallel."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.transformer import TransformerBlock

RNG = np.random.default_rng(0)
B, T, D, H = 2, 7, 8, 2


def np_layernorm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_dense(x, p):
  return x @ p['kernel'] + p['bias']


def np_gelu(x):  # tanh approximation, flax's default
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_block(p, x, key_mask=None, causal=True):
  """x + W_o·MHA(LN(x)), then + MLP(LN(.)) (Vaswani et al. 2017 in pre-LN form)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  b, t, d = x.shape
  dk = d // H
  h = np_layernorm(x, p['mixer_norm'])
  heads = lambda y: y.reshape(b, t, H, dk).transpose(0, 2, 1, 3)
  q, k, v = (heads(np_dense(h, p['mixer'][n])) for n in ('w_q', 'w_k', 'w_v'))
  scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dk)
  allowed = np.ones((b, 1, t, t), bool)
  if key_mask is not None:
    allowed &= key_mask[:, None, None, :]
  if causal:
    allowed &= np.tril(np.ones((t, t), bool))
  scores = np.where(allowed, scores, -np.inf)
  w = np.exp(scores - scores.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  attn = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
  x = x + np_dense(attn, p['mixer']['w_o'])
  mlp = p['mlp']
  return x + np_dense(np_gelu(np_dense(np_layernorm(x, p['mlp_norm']), mlp['up'])),
                      mlp['down'])


@functools.lru_cache(maxsize=None)
def build(causal=True, rope=False):
  block = TransformerBlock(D, H, causal=causal, rope=rope, max_len=T + 1)
  params = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, T, D)))
  # Randomise the norms' affine parameters so the reference checks they are applied.
  params = jax.tree.map(lambda a: a + 0.1 * RNG.standard_normal(a.shape).astype(np.float32),
                        params)
  fwd = jax.jit(lambda p, x, m: block.apply(p, x, m))

  @jax.jit
  def stream(p, x):
    state = block.apply(p, x.shape[0], method='init_state')
    step = lambda s, x_t: block.apply(p, s, x_t, method='step')
    return jnp.swapaxes(jax.lax.scan(step, state, jnp.swapaxes(x, 0, 1))[1], 0, 1)

  return block, params, fwd, stream


@pytest.mark.parametrize('causal', [True, False])
def test_matches_numpy_pre_ln_reference(causal):
  block, params, fwd, _ = build(causal=causal)
  assert block.mlp_hidden == 4 * D and block.is_causal is causal
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  mask = np.arange(T)[None] < np.array([T, 5])[:, None]
  for m in (None, mask):
    np.testing.assert_allclose(fwd(params, x, m), np_block(params['params'], x, m, causal),
                               atol=1e-5)


def test_causality_by_perturbation():
  _, params, fwd, _ = build(rope=True)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  y = np.asarray(fwd(params, x, None))
  for t in (0, 3, T - 1):
    x2 = x.copy()
    # A random (not constant) change: LayerNorm would erase a constant shift.
    x2[:, t] += RNG.standard_normal((B, D)).astype(np.float32)
    y2 = np.asarray(fwd(params, x2, None))
    np.testing.assert_array_equal(y2[:, :t], y[:, :t])
    assert np.all(np.abs(y2[:, t:] - y[:, t:]).max(-1) > 1e-4)


@pytest.mark.parametrize('rope', [False, True])
def test_streaming_equals_parallel(rope):
  _, params, fwd, stream = build(rope=rope)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  np.testing.assert_allclose(stream(params, x), fwd(params, x, None), atol=1e-5)


def test_padding_invariance_non_causal():
  _, params, fwd, _ = build(causal=False)
  x = RNG.standard_normal((1, 4, D)).astype(np.float32)
  padded = np.concatenate([x, 5 * RNG.standard_normal((1, T - 4, D)).astype(np.float32)], 1)
  mask = np.arange(T)[None] < 4
  y_alone = fwd(params, np.pad(x, ((0, 0), (0, T - 4), (0, 0))), mask)
  y_pad = fwd(params, padded, mask)
  np.testing.assert_allclose(np.asarray(y_pad)[:, :4], np.asarray(y_alone)[:, :4],
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(y_pad)[:, :4],
                             np_block(params['params'], x, None, causal=False), atol=1e-5)


def test_non_causal_block_does_not_stream():
  block, params, _, _ = build(causal=False)
  with pytest.raises(NotImplementedError):
    block.apply(params, 1, method='init_state')


def test_residual_dropout_only_in_training():
  _, params, fwd, _ = build()  # same parameter tree as the block with dropout
  block = TransformerBlock(D, H, dropout=0.5, attention_dropout=0.5, max_len=T + 1)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  y_eval, y_train = jax.jit(lambda p, x, key: (
      block.apply(p, x),  # deterministic by default: no dropout at all
      block.apply(p, x, deterministic=False, rngs={'dropout': key})))(
          params, x, jax.random.key(2, impl='rbg'))  # rbg compiles faster
  np.testing.assert_allclose(y_eval, fwd(params, x, None), atol=1e-6)
  np.testing.assert_allclose(y_eval, np_block(params['params'], x), atol=1e-5)
  assert np.abs(np.asarray(y_train) - np.asarray(y_eval)).max() > 1e-3
