"""GRU against a NumPy transcription of PyTorch's nn.GRU equations (tests/conftest.py)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.gru import (GRU, GRUCell, gru_cell_params_from_torch,
                               gru_params_from_torch)

IN, H = 4, 5


def torch_weights(torch_rnn, rng, num_layers, bidirectional):
  """Random weights in PyTorch's nn.GRU state-dict layout (gate blocks r, z, n)."""
  return torch_rnn.weights(rng, 3, IN, H, num_layers, bidirectional, scale=0.7)


@pytest.mark.parametrize('num_layers,bidirectional,impl',
                         [(2, True, 'rnn:hoisted'), (2, False, 'auto')])
def test_matches_numpy_reference_on_padded_batch(num_layers, bidirectional, impl,
                                                 torch_rnn):
  rng = np.random.default_rng(0)
  w = torch_weights(torch_rnn, rng, num_layers, bidirectional)
  lengths = [8, 2, 5]
  x = rng.normal(size=(3, 8, IN)).astype(np.float32)
  mask = np.arange(8)[None, :] < np.asarray(lengths)[:, None]
  model = GRU(IN, H, num_layers=num_layers, bidirectional=bidirectional, impl=impl)
  params = gru_params_from_torch(w, num_layers=num_layers, bidirectional=bidirectional)
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, state = apply({'params': params}, x, mask)
  dirs = ('fwd', 'bwd') if bidirectional else ('fwd',)
  h_n = [np.asarray(layer[d]) for layer in state for d in dirs]
  for b, n in enumerate(lengths):
    ref_y, ref_h = torch_rnn.stack(x[b, :n], w, 'gru', num_layers, bidirectional)
    np.testing.assert_allclose(y[b, :n], ref_y, atol=1e-5)
    np.testing.assert_array_equal(y[b, n:], 0.0)
    for got, ref in zip(h_n, ref_h):
      np.testing.assert_allclose(got[b], ref, atol=1e-5)


def test_gru_cell_converter_and_nn_scan_equal_layer(torch_rnn):
  rng = np.random.default_rng(1)
  w = torch_weights(torch_rnn, rng, 1, False)
  x = rng.normal(size=(2, 6, IN)).astype(np.float32)
  cell_params = gru_cell_params_from_torch({k.replace('_l0', ''): v for k, v in w.items()})
  layer_params = gru_params_from_torch(w, num_layers=1, bidirectional=False)
  assert set(cell_params) == set(layer_params['layers_0']['fwd'])
  for k in cell_params:
    np.testing.assert_array_equal(cell_params[k], layer_params['layers_0']['fwd'][k])
  scanned = nn.scan(GRUCell, variable_broadcast='params', split_rngs={'params': False},
                    in_axes=1, out_axes=1)(IN, H)
  h0 = GRUCell(IN, H).initial_carry(2)
  h, ys = jax.jit(scanned.apply)({'params': cell_params}, h0, x)
  y, state = jax.jit(functools.partial(GRU(IN, H).apply, return_final_state=True))(
      {'params': layer_params}, x)
  np.testing.assert_allclose(ys, y, atol=1e-6)
  np.testing.assert_allclose(h, state[0]['fwd'], atol=1e-6)
  ref, _ = torch_rnn.stack(x[1], w, 'gru', 1, False)
  np.testing.assert_allclose(ys[1], ref, atol=1e-5)
  cell_init = jax.eval_shape(GRUCell(IN, H).init, jax.random.key(0), h0, x[:, 0])['params']
  assert jax.tree.map(jnp.shape, cell_init) == jax.tree.map(jnp.shape, cell_params)


def test_converter_layout_matches_init_and_rejects_bad_keys(torch_rnn):
  w = torch_weights(torch_rnn, np.random.default_rng(2), 2, False)
  params = gru_params_from_torch(w, num_layers=2, bidirectional=False)
  init = jax.eval_shape(GRU(IN, H, num_layers=2).init, jax.random.key(0),
                        jnp.zeros((1, 2, IN)))['params']
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, dict(init))
  missing = {k: v for k, v in w.items() if k != 'bias_hh_l1'}
  with pytest.raises(ValueError, match='bias_hh_l1'):
    gru_params_from_torch(missing, num_layers=2, bidirectional=False)
  # An LSTM state dict (4 gate blocks) is mis-shaped for a GRU.
  lstm_like = dict(w, weight_ih_l0=np.zeros((4 * H, IN), np.float32))
  with pytest.raises(ValueError, match='weight_ih_l0'):
    gru_params_from_torch(lstm_like, num_layers=2, bidirectional=False)
  with pytest.raises(ValueError, match='weight_ih_l0_reverse'):
    gru_params_from_torch(w, num_layers=2, bidirectional=True)
