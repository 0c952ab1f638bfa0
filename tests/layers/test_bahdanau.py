"""BahdanauAttention against a NumPy reference of Bahdanau et al. 2015, eq. 6."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.bahdanau import BahdanauAttention

RNG = np.random.default_rng(0)
B, S, QD, KD, AD = 3, 7, 5, 6, 4


def np_bahdanau(p, query, keys, mask=None):
  """score_s = vᵀ tanh(W_q q + W_k k_s + b); softmax over real s; context = Σ w_s k_s."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  query, keys = np.asarray(query, np.float64), np.asarray(keys, np.float64)
  weights = np.zeros(keys.shape[:2])
  for b in range(keys.shape[0]):
    real = np.ones(keys.shape[1], bool) if mask is None else np.asarray(mask[b], bool)
    scores = np.array([p['v'] @ np.tanh(query[b] @ p['w_query'] + keys[b, s] @ p['w_key']
                                        + p['bias']) for s in range(keys.shape[1])])
    e = np.exp(scores[real] - scores[real].max())
    weights[b, real] = e / e.sum()
  context = np.einsum('bs,bsk->bk', weights, keys)
  return context, weights


def _data():
  query = RNG.standard_normal((B, QD)).astype(np.float32)
  keys = RNG.standard_normal((B, S, KD)).astype(np.float32)
  lengths = np.array([S, 4, 1])
  mask = np.arange(S)[None] < lengths[:, None]
  return query, keys, mask


ATTN = BahdanauAttention(QD, KD, AD)
PARAMS = jax.jit(ATTN.init)(jax.random.key(0), jnp.zeros((1, QD)), jnp.zeros((1, 2, KD)))
# Non-zero bias so the test sees it (init is zeros).
PARAMS['params']['bias'] = jnp.asarray(RNG.standard_normal(AD), jnp.float32)
apply = jax.jit(lambda p, q, k, m: ATTN.apply(p, q, k, m))


def test_matches_numpy_reference_with_and_without_mask():
  query, keys, mask = _data()
  for m in (None, mask):
    context, weights = apply(PARAMS, query, keys, m)
    ref_c, ref_w = np_bahdanau(PARAMS['params'], query, keys, m)
    np.testing.assert_allclose(weights, ref_w, atol=1e-6)
    np.testing.assert_allclose(context, ref_c, atol=1e-5)


def test_weights_sum_to_one_on_real_and_are_exactly_zero_on_padding():
  query, keys, mask = _data()
  # Padded keys hold huge values: any leak would show up in the context.
  keys = np.where(mask[..., None], keys, 1e4).astype(np.float32)
  context, weights = apply(PARAMS, query, keys, mask)
  w = np.asarray(weights)
  assert np.all(w[~mask] == 0.0)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(context, np.einsum('bs,bsk->bk', w, keys), atol=1e-5)
  np.testing.assert_allclose(w[2, 0], 1.0)  # a single real token takes all the weight
  np.testing.assert_allclose(context[2], keys[2, 0], atol=1e-6)


def test_fully_padded_row_and_precomputed_keys():
  query, keys, mask = _data()
  mask[1] = False
  context, weights = apply(PARAMS, query, keys, mask)
  assert np.all(np.asarray(weights)[1] == 0) and np.all(np.asarray(context)[1] == 0)
  @jax.jit
  def grad_and_precomputed(query, keys, mask):
    grad = jax.grad(lambda q: jnp.sum(ATTN.apply(PARAMS, q, keys, mask)[0]))(query)
    proj = ATTN.apply(PARAMS, keys, method='project_keys')
    return grad, proj, ATTN.apply(PARAMS, query, keys, mask, proj)

  grad, proj, (c2, w2) = grad_and_precomputed(query, keys, mask)
  assert np.all(np.isfinite(grad))
  p = PARAMS['params']
  np.testing.assert_allclose(proj, keys @ p['w_key'] + p['bias'], atol=1e-5)
  np.testing.assert_allclose(c2, context, atol=1e-6)
  np.testing.assert_allclose(w2, weights, atol=1e-6)


def test_width_checks():
  query, keys, _ = _data()
  with pytest.raises(ValueError, match='query_dim'):
    ATTN.apply(PARAMS, query[:, :-1], keys)
  with pytest.raises(ValueError, match='key_dim'):
    ATTN.apply(PARAMS, keys[..., :-1], method='project_keys')


class Decoder(nn.Module):
  """Attention decoder: h_t = tanh(W [x_t; context_t; h_{t-1}] + c), scanned over time.

  Keys are projected once outside ``nn.scan``; the scanned body reuses the same
  attention submodule (same params) at every step.
  """

  def setup(self):
    self.attn = BahdanauAttention(QD, KD, AD)
    self.cell = nn.Dense(QD)

  def body(self, h, x_t, keys, mask, proj):
    context, weights = self.attn(h, keys, mask, proj)
    h = jnp.tanh(self.cell(jnp.concatenate([x_t, context, h], -1)))
    return h, (h, weights)

  def __call__(self, h0, xs, keys, mask):
    proj = self.attn.project_keys(keys)
    scan = nn.scan(Decoder.body, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=1)
    return scan(self, h0, xs, keys, mask, proj)


def test_inside_nn_scan_matches_numpy_decoder_loop():
  query, keys, mask = _data()
  xs = RNG.standard_normal((B, 5, 2)).astype(np.float32)
  dec = Decoder()
  params = jax.jit(dec.init)(jax.random.key(1), query, xs, keys, mask)
  params['params']['attn']['bias'] = jnp.asarray(RNG.standard_normal(AD), jnp.float32)
  run = jax.jit(dec.apply)
  h_last, (hs, ws) = run(params, query, xs, keys, mask)
  p = params['params']
  h = query.astype(np.float64)
  for t in range(xs.shape[1]):
    c, w = np_bahdanau(p['attn'], h, keys, mask)
    np.testing.assert_allclose(ws[:, t], w, atol=1e-5)
    h = np.tanh(np.concatenate([xs[:, t], c, h], -1) @ np.asarray(p['cell']['kernel'])
                + np.asarray(p['cell']['bias']))
    np.testing.assert_allclose(hs[:, t], h, atol=1e-5)
  np.testing.assert_allclose(h_last, h, atol=1e-5)
  assert np.all(np.asarray(ws)[~np.broadcast_to(mask[:, None], ws.shape)] == 0)
  # The scan is not unrolled: 8x more decoder steps, (nearly) the same program.
  sizes = [len(run.lower(params, query, np.zeros((B, t, 2), np.float32), keys,
                         mask).as_text()) for t in (5, 40)]
  assert abs(sizes[1] - sizes[0]) / sizes[0] < 0.1
