"""LSTM against a NumPy transcription of PyTorch's nn.LSTM equations (tests/conftest.py),
plus what is special to a stacked LSTM (final states, the cell, the converters).
Streaming, causality and padding of the mixer are the mixer contract's
(tests/layers/test_mixer_contract.py)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.lstm import (LSTM, LSTMCell, lstm_cell_params_from_torch,
                                lstm_params_from_torch)

IN, H = 5, 6


def torch_weights(torch_rnn, rng, num_layers, bidirectional):
  """Random weights in PyTorch's nn.LSTM state-dict layout (gate blocks i, f, g, o)."""
  return torch_rnn.weights(rng, 4, IN, H, num_layers, bidirectional)


def flat_final(state, bidirectional):
  """Our final state -> PyTorch's h_n / c_n ordering."""
  dirs = ('fwd', 'bwd') if bidirectional else ('fwd',)
  hs = [np.asarray(layer[d][0]) for layer in state for d in dirs]
  cs = [np.asarray(layer[d][1]) for layer in state for d in dirs]
  return hs, cs


def padded_batch(rng, lengths, time, width):
  x = rng.normal(size=(len(lengths), time, width)).astype(np.float32)
  mask = np.arange(time)[None, :] < np.asarray(lengths)[:, None]
  return np.where(mask[..., None], x, 0.0).astype(np.float32), mask


@pytest.mark.parametrize('num_layers,bidirectional,impl',
                         [(1, False, 'auto'), (2, False, 'rnn:hoisted'),
                          (2, True, 'rnn:autodiff')])
def test_matches_numpy_reference_on_padded_batch(num_layers, bidirectional, impl,
                                                 torch_rnn):
  rng = np.random.default_rng(0)
  w = torch_weights(torch_rnn, rng, num_layers, bidirectional)
  lengths = [9, 5, 1]
  x, mask = padded_batch(rng, lengths, 9, IN)
  model = LSTM(IN, H, num_layers=num_layers, bidirectional=bidirectional, impl=impl)
  params = lstm_params_from_torch(w, num_layers=num_layers, bidirectional=bidirectional)
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, state = apply({'params': params}, x, mask)
  hs, cs = flat_final(state, bidirectional)
  for b, n in enumerate(lengths):
    ref_y, ref_finals = torch_rnn.stack(x[b, :n], w, 'lstm', num_layers, bidirectional)
    np.testing.assert_allclose(y[b, :n], ref_y, atol=1e-5)
    np.testing.assert_array_equal(y[b, n:], 0.0)  # padded outputs are exactly zero
    for got_h, got_c, (ref_h, ref_c) in zip(hs, cs, ref_finals):
      np.testing.assert_allclose(got_h[b], ref_h, atol=1e-5)
      np.testing.assert_allclose(got_c[b], ref_c, atol=1e-5)


def test_bidirectional_padded_batch_equals_each_sequence_alone(torch_rnn):
  """Outputs and final states of a 2-layer stack (the contract checks one layer)."""
  rng = np.random.default_rng(1)
  model = LSTM(IN, H, num_layers=2, bidirectional=True)
  lengths = [8, 3]
  x, mask = padded_batch(rng, lengths, 8, IN)
  variables = {'params': lstm_params_from_torch(torch_weights(torch_rnn, rng, 2, True),
                                                num_layers=2, bidirectional=True)}
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, state = apply(variables, x, mask)
  for b, n in enumerate(lengths):
    y_alone, state_alone = apply(variables, x[b:b + 1, :n], None)
    np.testing.assert_allclose(y[b, :n], y_alone[0], atol=1e-5)
    jax.tree.map(lambda s, a: np.testing.assert_allclose(s[b], a[0], atol=1e-5),
                 state, state_alone)


def test_lstm_cell_under_nn_scan_equals_layer(torch_rnn):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 7, IN)).astype(np.float32)
  layer = LSTM(IN, H)
  params = lstm_params_from_torch(torch_weights(torch_rnn, rng, 1, False), num_layers=1,
                                  bidirectional=False)
  scanned = nn.scan(LSTMCell, variable_broadcast='params', split_rngs={'params': False},
                    in_axes=1, out_axes=1)(IN, H)
  cell_params = params['layers_0']['fwd']
  carry0 = LSTMCell(IN, H).initial_carry(3)
  (h, c), ys = jax.jit(scanned.apply)({'params': cell_params}, carry0, x)
  y, state = jax.jit(functools.partial(layer.apply, return_final_state=True))(
      {'params': params}, x)
  np.testing.assert_allclose(ys, y, atol=1e-6)
  np.testing.assert_allclose(h, state[0]['fwd'][0], atol=1e-6)
  np.testing.assert_allclose(c, state[0]['fwd'][1], atol=1e-6)
  # The cell's own init creates the same layout as one layer direction.
  cell_init = jax.eval_shape(LSTMCell(IN, H).init, jax.random.key(0), carry0,
                             x[:, 0])['params']
  assert jax.tree.map(jnp.shape, cell_init) == jax.tree.map(jnp.shape, dict(cell_params))


def test_lstm_cell_converter_matches_numpy_step(torch_rnn):
  rng = np.random.default_rng(3)
  w = {k.replace('_l0', ''): v
       for k, v in torch_weights(torch_rnn, rng, 1, False).items()}
  x = rng.normal(size=(2, IN)).astype(np.float32)
  h0 = rng.normal(size=(2, H)).astype(np.float32)
  c0 = rng.normal(size=(2, H)).astype(np.float32)
  params = lstm_cell_params_from_torch(w)
  (h, c), y = LSTMCell(IN, H).apply({'params': params}, (h0, c0), x)
  args = [np.float64(w[n]) for n in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')]
  for b in range(2):
    h_ref, c_ref = torch_rnn.lstm_step(x[b], (h0[b], c0[b]), *args)
    np.testing.assert_allclose(c[b], c_ref, atol=1e-5)
    np.testing.assert_allclose(h[b], h_ref, atol=1e-5)
  np.testing.assert_array_equal(y, h)


def test_converter_layout_matches_init_and_rejects_bad_keys(torch_rnn):
  rng = np.random.default_rng(4)
  w = torch_weights(torch_rnn, rng, 2, True)
  params = lstm_params_from_torch(w, num_layers=2, bidirectional=True)
  init = jax.eval_shape(LSTM(IN, H, num_layers=2, bidirectional=True).init,
                        jax.random.key(0), jnp.zeros((1, 2, IN)))['params']
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, dict(init))

  missing = dict(w)
  del missing['bias_hh_l1_reverse']
  with pytest.raises(ValueError, match='bias_hh_l1_reverse'):
    lstm_params_from_torch(missing, num_layers=2, bidirectional=True)
  with pytest.raises(ValueError, match='weight_ih_l2'):
    lstm_params_from_torch(w, num_layers=3, bidirectional=True)
  with pytest.raises(ValueError, match='bias_hh_l0_reverse'):
    lstm_params_from_torch(w, num_layers=2, bidirectional=False)  # extra keys
  bad = dict(w, weight_hh_l1=np.zeros((4 * H, H + 1), np.float32))
  with pytest.raises(ValueError, match='weight_hh_l1'):
    lstm_params_from_torch(bad, num_layers=2, bidirectional=True)
  with pytest.raises(ValueError, match='weight_hh'):
    lstm_cell_params_from_torch({'weight_ih': w['weight_ih_l0']})


def test_bad_arguments():
  x = jnp.zeros((1, 3, IN))
  init = lambda model, x: jax.eval_shape(model.init, jax.random.key(0), x)
  with pytest.raises(ValueError, match='dropout'):
    init(LSTM(IN, H, dropout=1.5), x)
  with pytest.raises(ValueError, match='num_layers'):
    init(LSTM(IN, H, num_layers=0), x)
  with pytest.raises(ValueError, match='input_size'):
    init(LSTM(IN, H, num_layers=2), jnp.zeros((1, 3, IN + 1)))
  with pytest.raises(ValueError, match=r'rnn:hoist is not valid; choose rnn:fused \| '):
    init(LSTM(IN, H, impl='rnn:hoist'), x)
