"""LSTM against a NumPy transcription of PyTorch's nn.LSTM equations, plus its invariants."""

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


def torch_weights(rng, input_size, hidden, num_layers, bidirectional):
  """Random weights in PyTorch's nn.LSTM state-dict layout (gate blocks i, f, g, o)."""
  w = {}
  for k in range(num_layers):
    width = input_size if k == 0 else hidden * (2 if bidirectional else 1)
    for sfx in ([f'_l{k}', f'_l{k}_reverse'] if bidirectional else [f'_l{k}']):
      w[f'weight_ih{sfx}'] = rng.uniform(-0.6, 0.6, (4 * hidden, width))
      w[f'weight_hh{sfx}'] = rng.uniform(-0.6, 0.6, (4 * hidden, hidden))
      w[f'bias_ih{sfx}'] = rng.uniform(-0.6, 0.6, (4 * hidden,))
      w[f'bias_hh{sfx}'] = rng.uniform(-0.6, 0.6, (4 * hidden,))
  return {k: v.astype(np.float32) for k, v in w.items()}


def sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def np_lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse):
  """One direction over one unpadded sequence ``x`` [T, in]; float64, PyTorch layout."""
  hidden = w_hh.shape[1]
  h, c = np.zeros(hidden), np.zeros(hidden)
  out = np.zeros((len(x), hidden))
  for t in (reversed(range(len(x))) if reverse else range(len(x))):
    z = w_ih @ x[t] + b_ih + w_hh @ h + b_hh
    i, f, g, o = np.split(z, 4)  # PyTorch's gate order
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    out[t] = h
  return out, h, c


def np_lstm(x, w, num_layers, bidirectional):
  """Stacked (bi)LSTM over one sequence; returns (y [T, D*H], h_n, c_n) as PyTorch,
  h_n/c_n lists ordered (layer 0 fwd, layer 0 bwd, layer 1 fwd, ...)."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  inp, h_n, c_n = x.astype(np.float64), [], []
  for k in range(num_layers):
    outs = []
    for rev in ([False, True] if bidirectional else [False]):
      sfx = f'_l{k}' + ('_reverse' if rev else '')
      out, h, c = np_lstm_direction(inp, w[f'weight_ih{sfx}'], w[f'weight_hh{sfx}'],
                                    w[f'bias_ih{sfx}'], w[f'bias_hh{sfx}'], rev)
      outs.append(out)
      h_n.append(h)
      c_n.append(c)
    inp = np.concatenate(outs, axis=-1)
  return inp, h_n, c_n


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


@pytest.mark.parametrize('num_layers,bidirectional,hoist',
                         [(1, False, False), (2, False, True), (2, True, False)])
def test_matches_numpy_reference_on_padded_batch(num_layers, bidirectional, hoist):
  rng = np.random.default_rng(0)
  w = torch_weights(rng, IN, H, num_layers, bidirectional)
  lengths = [9, 5, 1]
  x, mask = padded_batch(rng, lengths, 9, IN)
  model = LSTM(IN, H, num_layers=num_layers, bidirectional=bidirectional,
               hoist_input_projection=hoist)
  params = lstm_params_from_torch(w, num_layers=num_layers, bidirectional=bidirectional)
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, state = apply({'params': params}, x, mask)
  hs, cs = flat_final(state, bidirectional)
  for b, n in enumerate(lengths):
    ref_y, ref_h, ref_c = np_lstm(x[b, :n], w, num_layers, bidirectional)
    np.testing.assert_allclose(y[b, :n], ref_y, atol=1e-5)
    np.testing.assert_array_equal(y[b, n:], 0.0)  # padded outputs are exactly zero
    for got, ref in zip(hs, ref_h):
      np.testing.assert_allclose(got[b], ref, atol=1e-5)
    for got, ref in zip(cs, ref_c):
      np.testing.assert_allclose(got[b], ref, atol=1e-5)


def test_bidirectional_padded_batch_equals_each_sequence_alone():
  rng = np.random.default_rng(1)
  model = LSTM(IN, H, num_layers=2, bidirectional=True)
  lengths = [8, 3]
  x, mask = padded_batch(rng, lengths, 8, IN)
  variables = {'params': lstm_params_from_torch(torch_weights(rng, IN, H, 2, True),
                                                num_layers=2, bidirectional=True)}
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, state = apply(variables, x, mask)
  for b, n in enumerate(lengths):
    y_alone, state_alone = apply(variables, x[b:b + 1, :n], None)
    np.testing.assert_allclose(y[b, :n], y_alone[0], atol=1e-5)
    jax.tree.map(lambda s, a: np.testing.assert_allclose(s[b], a[0], atol=1e-5),
                 state, state_alone)


def test_unidirectional_is_causal_by_perturbation():
  model = LSTM(IN, H, num_layers=2)
  assert model.is_causal and not LSTM(IN, H, bidirectional=True).is_causal
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 10, IN)).astype(np.float32)
  variables = {'params': lstm_params_from_torch(torch_weights(rng, IN, H, 2, False),
                                                num_layers=2, bidirectional=False)}
  apply = jax.jit(model.apply)
  y = apply(variables, x)
  for t in (0, 4, 8):
    x2 = x.copy()
    x2[:, t + 1:] += rng.normal(size=x2[:, t + 1:].shape).astype(np.float32)
    y2 = apply(variables, x2)
    np.testing.assert_array_equal(y2[:, :t + 1], y[:, :t + 1])
    assert not np.allclose(y2[:, t + 1:], y[:, t + 1:])


def test_lstm_cell_under_nn_scan_equals_layer():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 7, IN)).astype(np.float32)
  layer = LSTM(IN, H)
  params = lstm_params_from_torch(torch_weights(rng, IN, H, 1, False), num_layers=1,
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


def test_lstm_cell_converter_matches_numpy_step():
  rng = np.random.default_rng(3)
  w = {k.replace('_l0', ''): v for k, v in torch_weights(rng, IN, H, 1, False).items()}
  x = rng.normal(size=(2, IN)).astype(np.float32)
  h0 = rng.normal(size=(2, H)).astype(np.float32)
  c0 = rng.normal(size=(2, H)).astype(np.float32)
  params = lstm_cell_params_from_torch(w)
  (h, c), y = LSTMCell(IN, H).apply({'params': params}, (h0, c0), x)
  for b in range(2):
    z = (w['weight_ih'] @ x[b] + w['bias_ih'] + w['weight_hh'] @ h0[b] + w['bias_hh'])
    i, f, g, o = np.split(z.astype(np.float64), 4)
    c_ref = sigmoid(f) * c0[b] + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(c[b], c_ref, atol=1e-5)
    np.testing.assert_allclose(h[b], sigmoid(o) * np.tanh(c_ref), atol=1e-5)
  np.testing.assert_array_equal(y, h)


def test_converter_layout_matches_init_and_rejects_bad_keys():
  rng = np.random.default_rng(4)
  w = torch_weights(rng, IN, H, 2, True)
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


def test_bad_arguments_and_non_streamable():
  x = jnp.zeros((1, 3, IN))
  init = lambda model, x: jax.eval_shape(model.init, jax.random.key(0), x)
  with pytest.raises(ValueError, match='dropout'):
    init(LSTM(IN, H, dropout=1.5), x)
  with pytest.raises(ValueError, match='num_layers'):
    init(LSTM(IN, H, num_layers=0), x)
  with pytest.raises(ValueError, match='input_size'):
    init(LSTM(IN, H, num_layers=2), jnp.zeros((1, 3, IN + 1)))
  bi = LSTM(IN, H, bidirectional=True)
  with pytest.raises(NotImplementedError):
    bi.init_state(1)
  variables = {'params': lstm_params_from_torch(
      torch_weights(np.random.default_rng(0), IN, H, 1, True), num_layers=1,
      bidirectional=True)}
  with pytest.raises(NotImplementedError):
    bi.apply(variables, None, x[:, 0], method=LSTM.step)
