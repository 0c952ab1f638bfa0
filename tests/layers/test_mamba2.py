"""The Mamba-2 block against a float64 NumPy transcription of Dao & Gu 2024 (sec. 7.1,
Fig. 6, the authors' ``Mamba2Simple`` order: z, x, B, C, dt; the norm after the gate) with
the SSD as a plain loop; and its parallel form against the streamed step in gradients.
Streaming, padding, causality and compile size are the mixer contract's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.mamba2 import Mamba2

BATCH, T, D, HEADS, N = 2, 9, 4, 2, 3
E, P = 2 * D, 2 * D // HEADS


def np_ssd(x, a, b, c, h):
  """``h_t = exp(a_t) h_{t-1} + x_t B_t^T``, ``y_t = h_t C_t`` per head."""
  y = np.zeros_like(x)
  for t in range(x.shape[1]):
    h = np.exp(a[:, t])[..., None, None] * h + np.einsum('bhp,bn->bhpn', x[:, t], b[:, t])
    y[:, t] = np.einsum('bhpn,bn->bhp', h, c[:, t])
  return y, h


def _silu(v):
  return v / (1 + np.exp(-v))


def np_mamba2(p, u):
  proj = u @ p['in_proj']['kernel']
  z, xbc, dt = proj[..., :E], proj[..., E:2 * E + 2 * N], proj[..., 2 * E + 2 * N:]
  w, width = p['conv1d']['w'], p['conv1d']['w'].shape[0]
  conv = np.zeros_like(xbc) + p['conv1d']['b']
  for t in range(T):
    for j in range(width):
      if t - (width - 1 - j) >= 0:
        conv[:, t] += w[j] * xbc[:, t - (width - 1 - j)]
  conv = _silu(conv)
  x, b, c = conv[..., :E], conv[..., E:E + N], conv[..., E + N:]
  dt = np.logaddexp(0, dt + p['dt_bias'])                               # softplus
  a = -np.exp(p['A_log']) * dt
  xh = x.reshape(BATCH, T, HEADS, P)
  y, _ = np_ssd(xh * dt[..., None], a, b, c, np.zeros((BATCH, HEADS, P, N)))
  y = (y + p['D'][:, None] * xh).reshape(BATCH, T, E) * _silu(z)
  y = y / np.sqrt(np.mean(y ** 2, -1, keepdims=True) + 1e-5) * p['norm']['scale']
  return y @ p['out_proj']['kernel']


def _setup():
  layer = Mamba2(D, num_heads=HEADS, mamba2_d_state=N, mamba2_chunk=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, T, D)), jnp.float32)
  params = layer.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.7, p.dtype),
                        params)
  return layer, params, x


def test_matches_the_papers_block():
  layer, params, x = _setup()
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  np.testing.assert_allclose(layer.apply(params, x), np_mamba2(p, np.asarray(x, np.float64)),
                             rtol=1e-4, atol=1e-5)


def test_parallel_and_streamed_gradients_agree(streamed_gradients_agree):
  streamed_gradients_agree(*_setup())
