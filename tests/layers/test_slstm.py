"""The sLSTM layer against a float64 NumPy loop of the xLSTM paper's equations (Beck et al.
2024, eqs. 8-17, stabilised as in eq. 15), with block-diagonal recurrent weights; the
xLSTM[a:1] block pattern. Streaming, padding, causality and compile size are the mixer
contract's (tests/layers/test_mixer_contract.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.mlstm import MLSTM
from seqjax.layers.slstm import SLSTM
from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES

B, T, D, HEADS = 2, 9, 8, 2
DH = D // HEADS


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def np_slstm(p, x):
  w, width = p['conv1d']['w'], p['conv1d']['w'].shape[0]
  conv = np.zeros_like(x) + p['conv1d']['b']
  for t in range(x.shape[1]):
    for j in range(width):
      if t - (width - 1 - j) >= 0:
        conv[:, t] += w[j] * x[:, t - (width - 1 - j)]
  u = conv / (1 + np.exp(-conv))                                   # SiLU

  def headwise(v, q):
    return np.einsum('bthi,hij->bthj', v.reshape(B, T, HEADS, DH), q['w'])

  wx = [headwise(v, p[f'{g}gate']) for g, v in zip('ifzo', (u, u, x, x))]
  r = p['recurrent_kernel']                                        # [heads, d, 4, d]
  bias = p['bias'].reshape(4, HEADS, DH)
  h = c = n = np.zeros((B, HEADS, DH))
  m = np.full((B, HEADS, DH), -np.inf)
  out = np.zeros((B, T, HEADS, DH))
  for t in range(T):
    raw = [wx[g][:, t] + np.einsum('bhi,hij->bhj', h, r[:, :, g]) + bias[g]
           for g in range(4)]
    log_f = np.log(_sigmoid(raw[1]))
    m_new = np.maximum(log_f + m, raw[0])
    i_, f_ = np.exp(raw[0] - m_new), np.exp(log_f + m - m_new)
    c = f_ * c + i_ * np.tanh(raw[2])
    n = f_ * n + i_
    h = _sigmoid(raw[3]) * c / n
    m = m_new
    out[:, t] = h
  mean = out.mean(-1, keepdims=True)
  var = ((out - mean) ** 2).mean(-1, keepdims=True)
  normed = (out - mean) / np.sqrt(var + 1e-5) * p['group_norm']['weight'].reshape(HEADS, DH)
  return normed.reshape(B, T, D)


def test_matches_the_papers_equations():
  layer = SLSTM(D, num_heads=HEADS)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  params = layer.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.7, p.dtype),
                        params)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  np.testing.assert_allclose(layer.apply(params, x), np_slstm(p, np.asarray(x, np.float64)),
                             rtol=1e-4, atol=1e-4)


def test_xlstm_places_one_slstm_block_per_group():
  def kinds(num_layers, ratio):
    cfg = ModelConfig(model='xlstm', num_layers=num_layers, xlstm_mlstm_per_slstm=ratio,
                      d_model=16)
    mixers = [FAMILIES['xlstm'].build(cfg, True, i) for i in range(num_layers)]
    return ''.join({MLSTM: 'm', SLSTM: 's'}[type(m)] for m in mixers)

  assert kinds(8, 7) == 'msmmmmmm'
  assert kinds(2, 7) == 'ms'
  assert kinds(6, 2) == 'msmmsm'
  assert kinds(3, 0) == 'sss'
  assert isinstance(FAMILIES['xlstm'].build(ModelConfig(model='xlstm'), False, 1), nn.Module)
