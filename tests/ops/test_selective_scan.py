"""Tests for seqjax.ops.selective_scan: the fused scan vs a NumPy loop of Gu & Dao 2023
(eqs. 2a-2b, 4) and vs the materialised reference, values and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops import selective_scan as selective_scan_module
from seqjax.ops.selective_scan import selective_scan, selective_scan_reference

BATCH, TIME, E, N = 2, 11, 3, 4
ARG_NAMES = ('u', 'delta', 'a', 'b', 'c', 'd')

fused = jax.jit(selective_scan, static_argnames=('chunk_size',))
reference = jax.jit(selective_scan_reference, static_argnames=('scan_backend',))


def np_selective_scan(u, delta, a, b, c, d):
  """h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t;  y_t = C_t . h_t + D u_t (float64)."""
  u, delta, a, b, c, d = (np.asarray(v, np.float64) for v in (u, delta, a, b, c, d))
  h = np.zeros((u.shape[0], a.shape[0], a.shape[1]))
  y = np.zeros(u.shape)
  for t in range(u.shape[1]):
    for batch in range(u.shape[0]):
      for e in range(a.shape[0]):
        h[batch, e] = (np.exp(delta[batch, t, e] * a[e]) * h[batch, e]
                       + delta[batch, t, e] * u[batch, t, e] * b[batch, t])
        y[batch, t, e] = h[batch, e] @ c[batch, t] + d[e] * u[batch, t, e]
  return y


def _inputs(seed: int, time: int = TIME):
  """Float32 inputs in Mamba's ranges: delta = softplus(.) > 0 and A < 0."""
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(BATCH, time, E))
  delta = np.logaddexp(0.0, rng.normal(size=(BATCH, time, E)) - 1.0)
  a = -np.exp(rng.normal(size=(E, N)) * 0.5)
  b = rng.normal(size=(BATCH, time, N))
  c = rng.normal(size=(BATCH, time, N))
  d = rng.normal(size=(E,))
  w = rng.normal(size=(BATCH, time, E))  # cotangent of y in the losses below
  cast = lambda v: jnp.asarray(v, jnp.float32)
  return tuple(cast(v) for v in (u, delta, a, b, c, d)), cast(w)


@functools.partial(jax.jit, static_argnames=('chunk_size',))
def _grads(args, w, chunk_size=None):
  """Gradients of sum(y * w) w.r.t. all six arguments; ``chunk_size=None`` differentiates
  the materialised reference, an int the fused scan with that chunk size."""
  def loss(*args):
    if chunk_size is None:
      return jnp.sum(selective_scan_reference(*args) * w)
    return jnp.sum(selective_scan(*args, chunk_size=chunk_size) * w)
  return jax.grad(loss, argnums=tuple(range(6)))(*args)


@pytest.mark.parametrize('chunk_size', [1, 4, 16],
                         ids=['K1', 'K4_with_tail', 'K16_longer_than_T'])
def test_matches_numpy_loop(chunk_size):
  args, _ = _inputs(0)
  y = fused(*args, chunk_size=chunk_size)
  np.testing.assert_allclose(np.asarray(y), np_selective_scan(*args), rtol=1e-5, atol=1e-5)


def test_reference_matches_numpy_loop():
  args, _ = _inputs(1)
  np.testing.assert_allclose(np.asarray(reference(*args)), np_selective_scan(*args),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('chunk_size', [4, 16], ids=['K4_with_tail', 'K16_longer_than_T'])
def test_gradients_match_materialized_reference(chunk_size):
  args, w = _inputs(2)
  got, want = _grads(args, w, chunk_size), _grads(args, w)
  for name, g, g_ref in zip(ARG_NAMES, got, want):
    # Gradients are O(1-10) here: compare relative to each gradient's scale.
    scale = max(1.0, float(jnp.max(jnp.abs(g_ref))))
    np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(g_ref) / scale,
                               rtol=0, atol=1e-5, err_msg=f'd/d{name}')


def test_gradients_match_numpy_finite_differences():
  """Central differences of the float64 NumPy loop: a reference independent of JAX."""
  args, w = _inputs(3, time=6)
  w64 = np.asarray(w, np.float64)
  base = [np.asarray(v, np.float64) for v in args]
  got = _grads(args, w, 4)
  eps = 1e-6
  for i, (name, g) in enumerate(zip(ARG_NAMES, got)):
    want = np.zeros(base[i].shape)
    for idx in np.ndindex(base[i].shape):
      plus = [v.copy() for v in base]
      minus = [v.copy() for v in base]
      plus[i][idx] += eps
      minus[i][idx] -= eps
      want[idx] = np.sum((np_selective_scan(*plus) - np_selective_scan(*minus)) * w64) / (
          2 * eps)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-4,
                               err_msg=f'd/d{name}')


def test_padding_after_a_prefix_has_no_effect():
  """Right padding (any values after position t0) changes neither the outputs nor the
  gradients of a loss on the first t0 outputs, and gets exactly zero gradient."""
  t0 = 7
  args, w = _inputs(4)
  w = w.at[:, t0:].set(0.0)
  garbage = [v.at[:, t0:].set(1e3 if i != 1 else 5.0) if v.ndim == 3 else v
             for i, v in enumerate(args)]
  y, y_pad = fused(*args, chunk_size=4), fused(*garbage, chunk_size=4)
  np.testing.assert_array_equal(np.asarray(y_pad[:, :t0]), np.asarray(y[:, :t0]))
  g, g_pad = _grads(args, w, 4), _grads(garbage, w, 4)
  for name, gi, gi_pad in zip(ARG_NAMES, g, g_pad):
    if gi.ndim == 3:  # per-time arguments
      np.testing.assert_allclose(gi_pad[:, :t0], gi[:, :t0], rtol=1e-6, atol=1e-6,
                                 err_msg=f'd/d{name}')
      np.testing.assert_array_equal(np.asarray(gi_pad[:, t0:]), 0.0)


def test_batch_groups_match_materialized_reference(monkeypatch):
  """Batch rows scanned in groups (here 2 rows per group, 5 rows: the last group padded
  with a zero row) give the reference's outputs and gradients."""
  monkeypatch.setattr(selective_scan_module, 'GROUP_BYTES', 2 * 4 * E * N * 4)
  rng = np.random.default_rng(6)
  shapes = {'u': (5, 9, E), 'delta': (5, 9, E), 'a': (E, N), 'b': (5, 9, N),
            'c': (5, 9, N), 'd': (E,)}
  args = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes.values()]
  args[1] = jax.nn.softplus(args[1] - 1.0)
  args[2] = -jnp.exp(0.5 * args[2])
  w = jnp.asarray(rng.normal(size=(5, 9, E)), jnp.float32)
  loss = lambda fn: lambda *a: jnp.sum(fn(*a) * w)
  grouped = lambda *a: selective_scan(*a, chunk_size=4)
  # One program for the output and both gradients (run eagerly, every op compiled on its
  # own); a fresh function, traced here while GROUP_BYTES is patched.
  y, got, want = jax.jit(lambda *a: (
      grouped(*a), jax.grad(loss(grouped), argnums=tuple(range(6)))(*a),
      jax.grad(loss(selective_scan_reference), argnums=tuple(range(6)))(*a)))(*args)
  np.testing.assert_allclose(np.asarray(y), np_selective_scan(*args), rtol=1e-5, atol=1e-5)
  for name, g, g_ref in zip(ARG_NAMES, got, want):
    scale = max(1.0, float(jnp.max(jnp.abs(g_ref))))
    np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(g_ref) / scale,
                               rtol=0, atol=1e-5, err_msg=f'd/d{name}')


def test_gradients_when_batch_state_and_channels_coincide():
  """B = N = E: per-row weights ([B, N]) and per-channel ones ([N, E]) have the same
  shape here, so the scan must not tell them apart by shape."""
  rng = np.random.default_rng(7)
  size, time = 3, 5
  args = [jnp.asarray(rng.normal(size=s), jnp.float32)
          for s in ((size, time, size),) * 2 + ((size, size),) + ((size, time, size),) * 2
          + ((size,),)]
  args[1] = jax.nn.softplus(args[1] - 1.0)
  args[2] = -jnp.exp(0.5 * args[2])
  w = jnp.asarray(rng.normal(size=(size, time, size)), jnp.float32)
  got, want = _grads(tuple(args), w, 4), _grads(tuple(args), w)
  for name, g, g_ref in zip(ARG_NAMES, got, want):
    scale = max(1.0, float(jnp.max(jnp.abs(g_ref))))
    np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(g_ref) / scale,
                               rtol=0, atol=1e-5, err_msg=f'd/d{name}')


def test_no_skip_connection():
  args, _ = _inputs(5)
  d_zero = args[:5] + (jnp.zeros((E,)),)
  np.testing.assert_allclose(np.asarray(fused(*args[:5], None)),
                             np_selective_scan(*d_zero), rtol=1e-5, atol=1e-5)


def test_gradient_memory_has_no_time_by_state_array():
  """Under jax.grad the fused scan needs less temporary memory than one [B, T, E, N]
  array (its per-time buffers are [B, T, E]), while the materialised reference needs
  several such arrays (XLA's own memory analysis, not a timing)."""
  batch, time, e, n = 1, 256, 32, 16
  args = (jnp.ones((batch, time, e)), jnp.full((batch, time, e), 0.1), -jnp.ones((e, n)),
          jnp.ones((batch, time, n)), jnp.ones((batch, time, n)), jnp.ones((e,)))

  def temp_bytes(fn):
    loss = lambda *a: jnp.sum(fn(*a))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).lower(*args).compile()
    memory = compiled.memory_analysis()
    return memory.temp_size_in_bytes

  one_array = batch * time * e * n * 4
  assert temp_bytes(selective_scan) < one_array
  assert temp_bytes(selective_scan_reference) > 4 * one_array


@pytest.mark.parametrize('chunk_size', [0, 2.5, None])
def test_bad_chunk_size_raises(chunk_size):
  args, _ = _inputs(6)
  with pytest.raises(ValueError, match='chunk_size'):
    selective_scan(*args, chunk_size=chunk_size)
