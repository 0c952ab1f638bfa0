"""Hawk's recurrent block and the RG-LRU (De et al. 2024, sec. 2.4, eqs. 1-4) against a
float64 NumPy loop written from the paper and the authors' release (first token unscaled,
block-diagonal gates), and gradients of the parallel form against the streamed step (the
scan backends agree by tests/ops/test_scan.py). Streaming, padding, causality and compile size are the
mixer contract's (tests/layers/test_mixer_contract.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.rglru import Hawk, hawk_params_from_torch

B, T, D, E, HEADS = 2, 9, 4, 6, 2


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def _gelu_tanh(v):
  return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))


def np_hawk(p, x):
  """``p``: the Flax tree, or recurrentgemma's PyTorch state dict nested at its dots
  (``nn.Linear`` stores ``weight`` ``[out, in]``)."""
  dense = lambda v, q: v @ (q['kernel'] if 'kernel' in q else q['weight'].T) + q['bias']
  y = _gelu_tanh(dense(x, p['linear_y']))
  u = dense(x, p['linear_x'])
  w, width = p['conv_1d']['w'], p['conv_1d']['w'].shape[0]
  conv = np.zeros_like(u) + p['conv_1d']['b']
  for t in range(x.shape[1]):
    for j in range(width):       # tap j multiplies the input width-1-j steps back
      if t - (width - 1 - j) >= 0:
        conv[:, t] += w[j] * u[:, t - (width - 1 - j)]
  lru = p['rg_lru']

  def block_diag(v, q):
    vh = v.reshape(*v.shape[:-1], HEADS, -1)
    return (np.einsum('...hi,hij->...hj', vh, q['w']) + q['b']).reshape(v.shape)

  r, i = _sigmoid(block_diag(conv, lru['a_gate'])), _sigmoid(block_diag(conv, lru['input_gate']))
  a = _sigmoid(-lru['a_param']) ** (8 * r)          # a = sigma(-Lambda)^(c r_t), c = 8
  h, hs = np.zeros((x.shape[0], E)), np.zeros(conv.shape)
  for t in range(x.shape[1]):
    scale = 1.0 if t == 0 else np.sqrt(1 - a[:, t] ** 2)
    h = a[:, t] * h + scale * i[:, t] * conv[:, t]
    hs[:, t] = h
  return dense(hs * y, p['linear_out'])


def _setup():
  layer = Hawk(D, num_heads=HEADS, rglru_width=E)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(layer.init, jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  return layer, params, x


def test_matches_the_papers_equations():
  layer, params, x = _setup()
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  # One compiled program (eagerly, every operation compiles on its own).
  got = jax.jit(layer.apply)(params, x)
  np.testing.assert_allclose(got, np_hawk(p, np.asarray(x, np.float64)), rtol=1e-5,
                             atol=1e-5)


def test_parallel_and_streamed_gradients_agree(streamed_gradients_agree):
  streamed_gradients_agree(*_setup())


def test_decay_initialisation_is_the_releases_ring():
  """``sigma(-Lambda)^2`` uniform in ``[0.9^2, 0.999^2]``."""
  # The initialiser compiled once (eagerly, every operation compiles on its own).
  init = jax.jit(Hawk(64, num_heads=4).init)
  params = init(jax.random.key(0), jnp.zeros((1, 2, 64)))
  a = 1 / (1 + np.exp(np.asarray(params['params']['rg_lru']['a_param'], np.float64)))
  assert np.all(a ** 2 >= 0.9 ** 2 - 1e-6) and np.all(a ** 2 <= 0.999 ** 2 + 1e-6)
  assert a.std() > 0.01   # spread over the ring, not one value


def test_recurrentgemma_torch_state_dict_converts_one_to_one():
  rng = np.random.default_rng(3)
  shapes = {'linear_y.weight': (E, D), 'linear_y.bias': (E,), 'linear_x.weight': (E, D),
            'linear_x.bias': (E,), 'linear_out.weight': (D, E), 'linear_out.bias': (D,),
            'conv_1d.w': (4, E), 'conv_1d.b': (E,), 'rg_lru.a_param': (E,),
            'rg_lru.input_gate.w': (HEADS, E // HEADS, E // HEADS),
            'rg_lru.input_gate.b': (HEADS, E // HEADS),
            'rg_lru.a_gate.w': (HEADS, E // HEADS, E // HEADS),
            'rg_lru.a_gate.b': (HEADS, E // HEADS)}
  sd = {f'block.{k}': rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  nested = {}
  for key, value in sd.items():
    node = nested
    *path, leaf = key.split('.')[1:]
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value.astype(np.float64)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  got = jax.jit(Hawk(D, num_heads=HEADS, rglru_width=E).apply)(  # not op by op
      {'params': hawk_params_from_torch(sd)}, x)
  np.testing.assert_allclose(got, np_hawk(nested, x.astype(np.float64)), rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match=r"\['block.rg_lru.c_param'\] have no counterpart"):
    hawk_params_from_torch({**sd, 'block.rg_lru.c_param': np.zeros(E)})
  with pytest.raises(ValueError, match='missing'):
    hawk_params_from_torch({k: v for k, v in sd.items() if 'a_param' not in k})
  with pytest.raises(ValueError, match='linear_out.weight'):
    hawk_params_from_torch({**sd, 'block.linear_out.weight': np.zeros((D, E + 1))})
