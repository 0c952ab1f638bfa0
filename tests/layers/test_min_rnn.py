"""minGRU and minLSTM (Feng et al. 2024) against a float64 NumPy loop of the paper's
equations (sec. 3.1.2 and 3.2.2, with the positive ``g`` of sec. B.3), and the log-space
parallel form against the sequential step in gradients. Streaming, padding, causality and
compile size are the mixer contract's (tests/layers/test_mixer_contract.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.min_rnn import MinGRU, MinLSTM

B, T, D = 2, 11, 4


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def _g(v):
  return np.where(v >= 0, v + 0.5, _sigmoid(v))


def np_min_gru(k):
  k_z, k_h = np.split(k, 2, axis=-1)
  z, h_tilde = _sigmoid(k_z), _g(k_h)
  h, out = np.zeros(k_z[:, 0].shape), np.zeros(k_z.shape)
  for t in range(k.shape[1]):
    h = (1 - z[:, t]) * h + z[:, t] * h_tilde[:, t]
    out[:, t] = h
  return out


def np_min_lstm(k):
  k_f, k_i, k_h = np.split(k, 3, axis=-1)
  f, i, h_tilde = _sigmoid(k_f), _sigmoid(k_i), _g(k_h)
  f_, i_ = f / (f + i), i / (f + i)
  h, out = np.zeros(k_f[:, 0].shape), np.zeros(k_f.shape)
  for t in range(k.shape[1]):
    h = f_[:, t] * h + i_[:, t] * h_tilde[:, t]
    out[:, t] = h
  return out


CASES = [pytest.param(MinGRU, np_min_gru, id='min_gru'),
         pytest.param(MinLSTM, np_min_lstm, id='min_lstm')]


def _setup(cls):
  # chunk 4 puts chunk boundaries inside the 11 steps.
  layer = cls(D, min_rnn_chunk=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)) * 2, jnp.float32)
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(layer.init, jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  return layer, params, x


@pytest.mark.parametrize('cls, reference', CASES)
def test_parallel_form_matches_the_papers_equations(cls, reference):
  layer, params, x = _setup(cls)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  k = np.asarray(x, np.float64) @ p['proj']['kernel'] + p['proj']['bias']
  # One compiled program (eagerly, every operation compiles on its own).
  got = jax.jit(layer.apply)(params, x)
  np.testing.assert_allclose(got, reference(k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cls, reference', CASES)
def test_parallel_and_sequential_gradients_agree(cls, reference, streamed_gradients_agree):
  del reference
  streamed_gradients_agree(*_setup(cls))
