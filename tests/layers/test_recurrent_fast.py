"""The fused LSTM and GRU scans (hand-written backward) equal autodiff of the reference
scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.gru import GRU, GRU_CELL
from seqjax.layers.gru_vjp import gru_scan
from seqjax.layers.lstm import LSTM, LSTM_CELL
from seqjax.layers.lstm_vjp import lstm_scan
from seqjax.layers.recurrent import masked_scan

E, H, B, T = 5, 8, 3, 7
LENGTHS = np.array([7, 4, 1])  # full, padded, a single real token


def _close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5), a, b)


def _arrays(cell, seed):
  """Params of ``cell`` (one direction), inputs ``[T, B, E]``, an initial carry, and
  loss weights for the outputs and for each leaf of the final carry."""
  rng = np.random.default_rng(seed)
  f32 = lambda *s: rng.normal(size=s).astype(np.float32)
  params = {name: 0.5 * f32(*shape) for name, shape in cell.param_shapes(E, H).items()}
  carry = jax.tree.map(lambda z: f32(*z.shape), cell.init_carry(B, H, jnp.float32))
  carry_weights = jax.tree.map(lambda z: f32(*z.shape), carry)
  return params, f32(T, B, E), carry, f32(T, B, H), carry_weights


@pytest.mark.parametrize('cell, fused', [(LSTM_CELL, lstm_scan), (GRU_CELL, gru_scan)],
                         ids=['lstm', 'gru'])
def test_fused_scan_equals_autodiff_of_masked_scan(cell, fused):
  """Outputs, final carry and gradients w.r.t. params, inputs and the initial carry, both
  directions, with and without a padding mask (all four in one compiled loss)."""
  params, xs, carry, w_y, w_final = _arrays(cell, 0)
  mask = jnp.asarray(np.arange(T)[:, None] < LENGTHS[None])
  cases = [(m, r) for m in (None, mask) for r in (False, True)]

  def loss(scan_fn):
    def f(params, xs, carry):
      total, outs = 0.0, []
      for m, reverse in cases:
        final, ys = scan_fn(params, xs, m, carry, reverse)
        total += jnp.sum(w_y * ys) + sum(
            jnp.sum(w * s) for w, s in zip(jax.tree.leaves(w_final), jax.tree.leaves(final)))
        outs.append((final, ys))
      return total, outs
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

  ref = loss(lambda p, x, m, c, r: masked_scan(cell, p, x, m, c, reverse=r))
  fast = loss(lambda p, x, m, c, r: fused(p, x, m, c, reverse=r))
  (v_ref, out_ref), g_ref = ref(params, xs, carry)
  (v_fast, out_fast), g_fast = fast(params, xs, carry)
  _close(out_fast, out_ref)
  np.testing.assert_allclose(v_fast, v_ref, rtol=1e-5)
  _close(g_fast, g_ref)
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(g_ref))
  pad = ~np.asarray(mask)
  for (m, _), (_, ys) in zip(cases, out_fast):
    if m is not None:  # padded outputs are exactly 0
      assert np.all(np.asarray(ys)[pad] == 0)


@pytest.mark.parametrize('layer', [LSTM, GRU], ids=['lstm', 'gru'])
def test_bidirectional_stack_fused_equals_autodiff(layer):
  """A 2-layer bidirectional LSTM / GRU with a mask, initial_state and
  return_final_state: impl rnn:fused and rnn:autodiff agree in outputs, final states and
  all gradients."""
  x = np.random.default_rng(1).normal(size=(B, T, E)).astype(np.float32)
  mask = np.arange(T)[None] < LENGTHS[:, None]
  models = {f: layer(E, H, num_layers=2, bidirectional=True,
                     impl='rnn:fused' if f else 'rnn:autodiff') for f in (True, False)}
  variables = jax.jit(models[True].init)(jax.random.key(0), x[:, :2])
  rng = np.random.default_rng(2)
  shapes = jax.eval_shape(
      lambda v: models[True].apply(v, x, return_final_state=True)[1], variables)
  state = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32),
                       shapes)
  w_y = rng.normal(size=(B, T, 2 * H)).astype(np.float32)

  def grads(model):
    def f(params, x, state):
      y, final = model.apply({'params': params}, x, mask, initial_state=state,
                             return_final_state=True)
      return jnp.sum(w_y * y) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final)), (
          y, final)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
        variables['params'], x, state)

  (_, out_fast), g_fast = grads(models[True])
  (_, out_ref), g_ref = grads(models[False])
  _close(out_fast, out_ref)
  _close(g_fast, g_ref)
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(g_ref))


def test_each_cell_names_its_fused_scan():
  """The stacks find their fused scans through their cells (the gradient program's size
  is the mixer contract's check)."""
  assert LSTM_CELL.fused_scan is lstm_scan
  assert GRU_CELL.fused_scan is gru_scan
