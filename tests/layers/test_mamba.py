"""Tests for seqjax.layers.mamba against a NumPy loop of Gu & Dao 2023, Algorithm 2.

Streaming, causality, padding and compile size are the mixer contract's
(tests/layers/test_mixer_contract.py); this file keeps what is special to Mamba."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.mamba import Mamba

D_MODEL, D_STATE, D_CONV, EXPAND, BATCH, TIME = 8, 4, 4, 2, 2, 12
E = EXPAND * D_MODEL


def _silu(v):
  return v / (1 + np.exp(-v))


def np_mamba(params, x, d_conv=D_CONV, d_state=D_STATE):
  """Reference Mamba block: naive loops over time, float64, params from the Flax tree."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  x = np.asarray(x, np.float64)
  batch, time, _ = x.shape
  e = p['D'].shape[0]
  rank = p['dt_proj']['kernel'].shape[0]
  xz = x @ p['in_proj']['kernel']
  xs, z = xz[..., :e], xz[..., e:]
  # Causal depthwise conv: tap k multiplies the input k - (d_conv - 1) steps away.
  xc = np.zeros_like(xs)
  for t in range(time):
    acc = p['conv_bias'].copy()
    for k in range(d_conv):
      src = t - (d_conv - 1) + k
      if src >= 0:
        acc = acc + p['conv_kernel'][k] * xs[:, src]
    xc[:, t] = acc
  xc = _silu(xc)
  x_dbl = xc @ p['x_proj']['kernel']
  dt = x_dbl[..., :rank]
  b = x_dbl[..., rank:rank + d_state]
  c = x_dbl[..., rank + d_state:]
  delta = np.logaddexp(0.0, dt @ p['dt_proj']['kernel'] + p['dt_proj']['bias'])
  a = -np.exp(p['A_log'])                                         # [E, N]
  h = np.zeros((batch, e, d_state))
  y = np.zeros((batch, time, e))
  for t in range(time):
    d_t = delta[:, t, :, None]
    h = np.exp(d_t * a) * h + d_t * b[:, t, None, :] * xc[:, t, :, None]
    y[:, t] = np.einsum('ben,bn->be', h, c[:, t]) + p['D'] * xc[:, t]
  return (y * _silu(z)) @ p['out_proj']['kernel']


@functools.lru_cache(maxsize=None)
def _model(backend: str = 'sequential', scan_impl: str = 'fused'):
  model = Mamba(D_MODEL, D_STATE, D_CONV, EXPAND,
                impl=f'selective_scan:{scan_impl},scan:{backend}')
  return model, jax.jit(model.apply)


@functools.lru_cache(maxsize=None)
def _init():
  """Init params (jitted once: eager Flax init dispatches every small op separately)."""
  model, _ = _model()
  return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1, D_MODEL)))


def _params(seed: int):
  """Init params moved off their structured values (A_log = log n, D = 1, ...) with
  NumPy noise, so every entry of every param matters in the comparisons."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda v: jnp.asarray(v + 0.2 * rng.normal(size=v.shape), jnp.float32), _init())


def _x(seed=0, time=TIME):
  return jax.random.normal(jax.random.key(seed), (BATCH, time, D_MODEL))


@pytest.mark.parametrize('scan_impl, backend', [
    ('fused', 'sequential'), ('materialized', 'sequential'),
    ('materialized', 'associative')])
def test_parallel_matches_numpy_reference(scan_impl, backend):
  _, fwd = _model(backend, scan_impl)
  params = _params(1)
  x = _x(1)
  np.testing.assert_allclose(np.asarray(fwd(params, x)), np_mamba(params, x),
                             rtol=1e-5, atol=1e-5)


def test_init_follows_reference():
  model, _ = _model()
  p = _init()['params']
  np.testing.assert_allclose(np.exp(p['A_log']),
                             np.broadcast_to(np.arange(1, D_STATE + 1), (E, D_STATE)),
                             rtol=1e-6)
  np.testing.assert_array_equal(p['D'], 1.0)
  dt = np.logaddexp(0.0, np.float64(p['dt_proj']['bias']))  # softplus(bias)
  assert np.all(dt >= 1e-3 * (1 - 1e-5)) and np.all(dt <= 1e-1 * (1 + 1e-5))
  assert dt.max() / dt.min() > 2
  rank = math.ceil(D_MODEL / 16)
  assert model.rank == rank
  assert p['x_proj']['kernel'].shape == (E, rank + 2 * D_STATE)
  assert np.abs(p['dt_proj']['kernel']).max() <= rank ** -0.5
  assert np.abs(p['conv_kernel']).max() <= D_CONV ** -0.5


def test_stream_shorter_than_the_conv_window_and_its_conv_state(stream):
  """A stream of fewer tokens than d_conv equals the parallel mode, and the conv state is
  the window of the last d_conv - 1 conv inputs (zeros before the first token)."""
  model, fwd = _model()
  params = _params(2)
  x = _x(2, 2)
  state, y_stream = jax.jit(lambda p, x: stream(model, p, x))(params, x)
  np.testing.assert_allclose(np.asarray(y_stream), np.asarray(fwd(params, x)),
                             rtol=1e-5, atol=1e-5)
  assert state['conv'].shape == (BATCH, D_CONV - 1, E)
  assert state['ssm'].shape == (BATCH, E, D_STATE)
  # The conv state is the window of the last d_conv - 1 conv inputs (x branch).
  xs = np.asarray(x) @ np.asarray(params['params']['in_proj']['kernel'])[:, :E]
  want = np.pad(xs, ((0, 0), (D_CONV - 1, 0), (0, 0)))[:, -(D_CONV - 1):]
  np.testing.assert_allclose(state['conv'], want, rtol=1e-5, atol=1e-5)


def test_backends_agree():
  """The fused scan and the materialised one (sequential and associative) give the same
  block output (gradient agreement is tested on the ops themselves in
  tests/ops/test_scan.py and tests/ops/test_selective_scan.py)."""
  params = _params(3)
  x = _x(3)
  y_seq = _model('sequential', 'materialized')[1](params, x)
  for backend, impl in (('associative', 'materialized'), ('sequential', 'fused')):
    y = _model(backend, impl)[1](params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_seq), rtol=1e-5, atol=1e-6)


def test_conv_receptive_field_is_causal_window():
  """With C = 0 the SSM is silent and y_t sees x only through the conv: exactly
  x_{t-d_conv+1} .. x_t. Row i+1 of the batch perturbs token i of row 0."""
  _, fwd = _model()
  params = _params(5)
  kernel = params['params']['x_proj']['kernel']
  rank = kernel.shape[1] - 2 * D_STATE
  params['params']['x_proj']['kernel'] = kernel.at[:, rank + D_STATE:].set(0.0)
  x = jnp.tile(_x(5)[:1], (TIME + 1, 1, 1))
  x = x.at[jnp.arange(1, TIME + 1), jnp.arange(TIME)].add(1.0)
  y = np.asarray(fwd(params, x))
  dep = np.abs(y[1:] - y[:1]).max(-1).T > 1e-6  # [t_out, t_in]
  t_out, t_in = np.meshgrid(np.arange(TIME), np.arange(TIME), indexing='ij')
  np.testing.assert_array_equal(dep, (t_in <= t_out) & (t_in > t_out - D_CONV))


@pytest.mark.parametrize('kwargs, match', [
    ({'dt_rank': 0}, 'dt_rank'),
    ({'dt_rank': 'full'}, 'dt_rank'),
    ({'impl': 'scan:cuda'}, r'scan:sequential \| associative'),
    ({'mamba_d_conv': 0}, 'mamba_d_conv'),
    ({'impl': 'selective_scan:cuda'}, r'selective_scan:fused \| materialized'),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(Mamba(D_MODEL, **kwargs).init, jax.random.key(0),
                   jnp.zeros((1, 1, D_MODEL)))
