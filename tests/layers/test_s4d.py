"""Tests for seqjax.layers.s4d against the S4D convolution kernel (Gu et al. 2022).

Streaming, causality, padding and compile size are the mixer contract's
(tests/layers/test_mixer_contract.py); this file keeps what is special to S4D."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.s4d import S4D

D_MODEL, N_STATE, BATCH, TIME = 6, 8, 2, 12


def np_s4d_conv(params, x):
  """Reference through the SSM kernel, not the recurrence (float64).

  K_k = 2 Re(sum_n C_n A_bar_n^k B_bar_n), y_t = sum_{j<=t} K_{t-j} x_j + D x_t, with the
  ZOH discretisation A_bar = exp(dt A), B_bar = (A_bar - 1) / A * B.
  """
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  a = -np.exp(p['log_A_real']) + 1j * p['A_imag']                 # [d, n]
  b = p['B'][..., 0] + 1j * p['B'][..., 1]
  c = p['C'][..., 0] + 1j * p['C'][..., 1]
  dt = np.exp(p['log_dt'])[:, None]
  a_bar = np.exp(dt * a)
  b_bar = (a_bar - 1) / a * b
  k = np.arange(x.shape[1])
  kernel = 2 * np.einsum('dn,dnk->dk', c * b_bar, a_bar[..., None] ** k).real  # [d, T]
  x = np.asarray(x, np.float64)
  y = np.zeros_like(x)
  for t in range(x.shape[1]):
    # Causal convolution: y_t = sum_j K_{t-j} x_j over j <= t.
    y[:, t] = np.einsum('dj,bjd->bd', kernel[:, t::-1], x[:, :t + 1])
  return y + p['D'] * x


# The parallel paths: FFT convolution with the SSM kernel, and the recurrence on each scan
# backend (values of the implementation switch).
PATHS = {'convolution': 's4d:convolution',
         'sequential': 's4d:scan,scan:sequential',
         'associative': 's4d:scan,scan:associative',
         'chunked': 's4d:scan,scan:chunked'}


@functools.lru_cache(maxsize=None)
def _init(s4d_init: str = 'lin'):
  """Init params for one A initialisation (jitted once: eager Flax init is slow)."""
  model = S4D(D_MODEL, N_STATE, s4d_init=s4d_init)
  return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1, D_MODEL)))


def _params(seed: int, s4d_init: str = 'lin'):
  """Init params moved off their structured values (B = 1, Re A = -1/2, ...) with NumPy
  noise, so every entry of every param matters in the comparisons."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda v: jnp.asarray(v + 0.3 * rng.normal(size=v.shape), jnp.float32),
      _init(s4d_init))


@functools.lru_cache(maxsize=None)
def _forward(path: str):
  """Jitted parallel forward; params do not depend on the path, so any init fits."""
  model = S4D(D_MODEL, N_STATE, impl=PATHS[path])
  return model, jax.jit(model.apply)


def _x(seed=0, time=TIME):
  return jax.random.normal(jax.random.key(seed), (BATCH, time, D_MODEL))


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('s4d_init', ['lin', 'inv'])
def test_parallel_matches_convolution_kernel(path, s4d_init):
  _, fwd = _forward(path)
  params = _params(1, s4d_init)
  x = _x()
  want = np_s4d_conv(params, x)
  np.testing.assert_allclose(np.asarray(fwd(params, x)), want, rtol=1e-5, atol=1e-5)


def test_init_values_follow_the_paper():
  n = np.arange(N_STATE // 2)
  dt_min, dt_max = S4D.dt_min, S4D.dt_max  # the defaults, 1e-3 and 1e-1
  assert (dt_min, dt_max) == (1e-3, 1e-1)
  for s4d_init, imag in [('lin', np.pi * n),
                         ('inv', N_STATE / np.pi * (N_STATE / (2 * n + 1) - 1))]:
    p = _init(s4d_init)['params']
    np.testing.assert_allclose(p['A_imag'], np.broadcast_to(imag, (D_MODEL, n.size)),
                               rtol=1e-6)
    # Re(A) = -exp(log_A_real) = -1/2.
    np.testing.assert_allclose(-np.exp(p['log_A_real']), -0.5, rtol=1e-6)
    np.testing.assert_array_equal(p['B'][..., 0], 1.0)
    np.testing.assert_array_equal(p['B'][..., 1], 0.0)
    dt = np.exp(p['log_dt'])
    assert np.all(dt >= dt_min * (1 - 1e-6)) and np.all(dt <= dt_max * (1 + 1e-6))
    assert dt.max() / dt.min() > 2  # spread over the log range, not a constant
    assert np.std(p['C']) > 0.3


def test_discretization_is_stable_for_any_params():
  """Re(A) = -exp(log_A_real) < 0 by construction, so |A_bar| < 1 whatever is learned."""
  model, _ = _forward('sequential')
  params = _params(2)
  params['params']['log_A_real'] = params['params']['log_A_real'] + jnp.linspace(
      -4.0, 4.0, N_STATE // 2)
  params['params']['A_imag'] = params['params']['A_imag'] * -50.0
  a_bar, _, _, _ = jax.jit(functools.partial(model.apply, method=model.discretize))(
      params)
  assert np.all(np.abs(np.asarray(a_bar)) < 1.0)


def test_parallel_paths_agree_with_gradients():
  """FFT convolution and every scan backend give the same outputs and parameter/input
  gradients (at a length that is not a power of two)."""
  params = _params(3, 'inv')
  x = _x(3, time=37)

  def loss(path):
    model = S4D(D_MODEL, N_STATE, impl=PATHS[path])
    return jax.jit(jax.value_and_grad(
        lambda p, x: jnp.sum(jnp.sin(model.apply(p, x))), argnums=(0, 1)))

  value, grads = loss('sequential')(params, x)
  for path in ('convolution', 'associative', 'chunked'):
    other_value, other_grads = loss(path)(params, x)
    np.testing.assert_allclose(other_value, value, rtol=1e-5)
    for g, r in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * float(np.abs(r).max()))


@pytest.mark.parametrize('kwargs, match', [
    ({'s4d_state_size': 7}, 's4d_state_size'),
    ({'s4d_init': 'legs'}, "'lin', 'inv'"),
    ({'impl': 'scan:fft'}, r'scan:sequential \| associative'),
    ({'impl': 's4d:fft'}, r's4d:convolution \| scan'),
    ({'dt_min': 0.2, 'dt_max': 0.1}, 'dt_min'),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    model = S4D(**{'d_model': D_MODEL, 's4d_state_size': N_STATE, **kwargs})
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, D_MODEL)))

