"""TransformerBlock: a NumPy pre-LN reference and residual dropout.

The attention mixer's causality, padding and streaming are the mixer contract's
(tests/layers/test_mixer_contract.py); streaming through whole blocks is tested with the
language models (tests/models/test_lm.py)."""

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
def build(causal=True):
  block = TransformerBlock(D, H, causal=causal, max_len=T + 1)
  params = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, T, D)))
  # Randomise the norms' affine parameters so the reference checks they are applied.
  params = jax.tree.map(lambda a: a + 0.1 * RNG.standard_normal(a.shape).astype(np.float32),
                        params)
  fwd = jax.jit(lambda p, x, m: block.apply(p, x, m))
  return block, params, fwd


@pytest.mark.parametrize('causal', [True, False])
def test_matches_numpy_pre_ln_reference(causal):
  block, params, fwd = build(causal=causal)
  assert block.mlp_hidden == 4 * D and block.is_causal is causal
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  mask = np.arange(T)[None] < np.array([T, 5])[:, None]
  for m in (None, mask):
    np.testing.assert_allclose(fwd(params, x, m), np_block(params['params'], x, m, causal),
                               atol=1e-5)


def test_residual_dropout_only_in_training():
  _, params, fwd = build()  # same parameter tree as the block with dropout
  block = TransformerBlock(D, H, dropout=0.5, attention_dropout=0.5, max_len=T + 1)
  x = RNG.standard_normal((B, T, D)).astype(np.float32)
  y_eval, y_train = jax.jit(lambda p, x, key: (
      block.apply(p, x),  # deterministic by default: no dropout at all
      block.apply(p, x, deterministic=False, rngs={'dropout': key})))(
          params, x, jax.random.key(2, impl='rbg'))  # rbg compiles faster
  np.testing.assert_allclose(y_eval, fwd(params, x, None), atol=1e-6)
  np.testing.assert_allclose(y_eval, np_block(params['params'], x), atol=1e-5)
  assert np.abs(np.asarray(y_train) - np.asarray(y_eval)).max() > 1e-3
