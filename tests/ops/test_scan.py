"""Tests for seqjax.ops.scan: the linear recurrence vs a NumPy loop, on every backend."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops.scan import BACKENDS, SCAN, final_state, linear_scan

# Concrete backends; 'auto' is one of them on any platform (test_auto_resolves_per_platform).
BATCH, TIME, DIM = 2, 9, 3

# One jitted entry point: eager dispatch of the associative scan's many small ops is
# slower than compiling it.
scan = jax.jit(linear_scan, static_argnames=('reverse', 'backend', 'axis', 'chunk_size'))


def np_linear_scan(a, b, h0=None, reverse=False):
  """Reference: h_t = a_t h_{t-1} + b_t over axis 1, in float64/complex128."""
  a = np.broadcast_to(np.asarray(a), np.broadcast_shapes(np.shape(a), np.shape(b)))
  b = np.broadcast_to(np.asarray(b), a.shape)
  dtype = np.result_type(a, b, np.float64)
  h = np.zeros(b.shape[:1] + b.shape[2:], dtype) if h0 is None else np.array(h0, dtype)
  out = np.zeros(b.shape, dtype)
  steps = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
  for t in steps:
    h = a[:, t] * h + b[:, t]
    out[:, t] = h
  return out


def _inputs(seed: int, complex_: bool):
  rng = np.random.default_rng(seed)
  shape = (BATCH, TIME, DIM)
  # |a| <= 1 keeps the states O(1) so a 1e-5 tolerance is meaningful.
  a = rng.uniform(-1, 1, shape)
  b = rng.normal(size=shape)
  h0 = rng.normal(size=(BATCH, DIM))
  if complex_:
    a = a * np.exp(1j * rng.uniform(0, 2 * np.pi, shape))
    b = b + 1j * rng.normal(size=shape)
    h0 = h0 + 1j * rng.normal(size=(BATCH, DIM))
    cast = lambda v: v.astype(np.complex64)
  else:
    cast = lambda v: v.astype(np.float32)
  return cast(a), cast(b), cast(h0)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('complex_', [False, True], ids=['real', 'complex'])
@pytest.mark.parametrize('reverse', [False, True], ids=['forward', 'reverse'])
@pytest.mark.parametrize('with_h0', [False, True], ids=['zero_h0', 'h0'])
def test_matches_numpy_loop(backend, complex_, reverse, with_h0):
  a, b, h0 = _inputs(0, complex_)
  h0 = h0 if with_h0 else None
  got = scan(a, b, h0, reverse=reverse, backend=backend)
  want = np_linear_scan(a, b, h0, reverse=reverse)
  assert got.dtype == (jnp.complex64 if complex_ else jnp.float32)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('a_shape', [(DIM,), (1, 1, DIM), (BATCH, 1, DIM)])
def test_time_invariant_a_broadcasts(backend, a_shape):
  """A decay without a time axis (S4D's A-bar) acts as the same a at every step."""
  rng = np.random.default_rng(1)
  a = rng.uniform(-1, 1, a_shape).astype(np.float32)
  _, b, h0 = _inputs(2, False)
  got = scan(a, b, h0, backend=backend)
  want = np_linear_scan(np.broadcast_to(a, b.shape), b, h0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
def test_axis_argument(backend):
  """Time on axis 0 or given as a negative axis is the same recurrence."""
  a, b, h0 = _inputs(3, True)
  want = np_linear_scan(a, b, h0, reverse=True)
  got0 = scan(np.swapaxes(a, 0, 1), np.swapaxes(b, 0, 1), h0, reverse=True,
                     backend=backend, axis=0)
  got_neg = scan(a, b, h0, reverse=True, backend=backend, axis=-2)
  np.testing.assert_allclose(np.swapaxes(np.asarray(got0), 0, 1), want, 1e-5, 1e-5)
  np.testing.assert_allclose(np.asarray(got_neg), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('complex_', [False, True], ids=['real', 'complex'])
def test_backends_agree_values_and_gradients(complex_):
  a, b, h0 = _inputs(4, complex_)
  w = np.random.default_rng(5).normal(size=(2,) + b.shape).astype(np.float32)

  @functools.partial(jax.jit, static_argnums=3)
  @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
  def loss(a, b, h0, backend):
    # Both directions in one loss: one compile per backend covers both.
    h_fwd = linear_scan(a, b, h0, backend=backend)
    h_rev = linear_scan(a, b, h0, reverse=True, backend=backend)
    return jnp.sum(w[0] * jnp.abs(h_fwd) ** 2 + w[1] * jnp.abs(h_rev) ** 2)

  v_ref, g_ref = loss(a, b, h0, 'sequential')
  # 'auto' resolves to one of these (test_auto_resolves_per_platform), so it is not
  # compiled again here.
  for backend in ('associative', 'chunked'):
    v, g = loss(a, b, h0, backend)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    for g_backend, g_base in zip(g, g_ref):
      assert np.abs(np.asarray(g_base)).max() > 0
      np.testing.assert_allclose(np.asarray(g_backend), np.asarray(g_base), rtol=1e-4,
                                 atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('reverse', [False, True], ids=['forward', 'reverse'])
def test_final_state_continues_the_recurrence(backend, reverse):
  """Scanning in two chunks, carrying final_state as h0, equals one scan."""
  a, b, _ = _inputs(6, True)
  full = scan(a, b, reverse=reverse, backend=backend)
  cut = 4
  first, second = (slice(cut, None), slice(None, cut)) if reverse else (
      slice(None, cut), slice(cut, None))
  h_first = scan(a[:, first], b[:, first], reverse=reverse, backend=backend)
  h_second = scan(a[:, second], b[:, second],
                         final_state(h_first, reverse=reverse), reverse=reverse,
                         backend=backend)
  np.testing.assert_allclose(np.asarray(h_second), np.asarray(full[:, second]),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(final_state(full, reverse=reverse),
                                full[:, 0] if reverse else full[:, -1])


def test_unknown_backend_lists_choices():
  a, b, _ = _inputs(7, False)
  with pytest.raises(ValueError, match="'sequential', 'associative'"):
    linear_scan(a, b, backend='parallel')


def _hlo_size(backend: str, time: int) -> int:
  x = jnp.zeros((BATCH, time, DIM))
  f = jax.jit(lambda a, b: linear_scan(a, b, backend=backend))
  return len(f.lower(x, x).as_text())


def test_no_unrolled_time_loop():
  """Program size must not grow like T: constant (sequential), O(log T) (associative)."""
  t = 16
  seq_small, seq_large = _hlo_size('sequential', t), _hlo_size('sequential', 8 * t)
  assert abs(seq_large - seq_small) <= 0.1 * seq_small
  # The associative scan has log2(T) combine levels, so 8x the length adds three levels
  # (about +70 % here); an unrolled loop would be about 8x.
  assoc_small, assoc_large = _hlo_size('associative', t), _hlo_size('associative', 8 * t)
  assert assoc_large < 2 * assoc_small
  # Chunked: one loop over chunks plus an unrolled body of chunk_size steps (constant).
  chunk_small, chunk_large = _hlo_size('chunked', t), _hlo_size('chunked', 8 * t)
  assert abs(chunk_large - chunk_small) <= 0.1 * chunk_small


@pytest.mark.parametrize('time, chunk_size', [(20, 8), (5, 8)])
def test_chunked_any_length_values_and_gradients(time, chunk_size):
  """T a multiple of the chunk, not a multiple, and shorter than one chunk; complex a, b
  and h0; both directions: values vs the NumPy loop, gradients vs the sequential scan."""
  rng = np.random.default_rng(time)
  shape = (2, time, 3)
  a = (rng.uniform(-1, 1, shape) * np.exp(1j * rng.uniform(0, 6.3, shape))).astype(
      np.complex64)
  b = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  h0 = (rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))).astype(np.complex64)
  w = rng.normal(size=(2,) + shape).astype(np.float32)

  def loss(a, b, h0, backend):
    hs = [linear_scan(a, b, h0, reverse=r, backend=backend, chunk_size=chunk_size)
          for r in (False, True)]
    return jnp.sum(w[0] * jnp.abs(hs[0]) ** 2 + w[1] * jnp.abs(hs[1]) ** 2), hs

  grads = {}
  for backend in ('sequential', 'chunked'):
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True),
                static_argnums=3)
    (_, hs), grads[backend] = f(a, b, h0, backend)
    for reverse, h in zip((False, True), hs):
      np.testing.assert_allclose(np.asarray(h), np_linear_scan(a, b, h0, reverse),
                                 rtol=1e-5, atol=1e-5)
  for g_chunk, g_seq in zip(grads['chunked'], grads['sequential']):
    np.testing.assert_allclose(np.asarray(g_chunk), np.asarray(g_seq), rtol=1e-5,
                               atol=1e-5)


def test_auto_resolves_per_platform():
  """'auto' is a concrete backend for every platform and equals it on this one."""
  for platform in ('cpu', 'gpu', 'tpu'):
    for time in (None, 16, 4096):
      assert SCAN.resolve('auto', time, platform) in BACKENDS
  a, b, h0 = _inputs(8, False)
  chosen = SCAN.resolve('scan:auto', TIME)
  np.testing.assert_array_equal(np.asarray(scan(a, b, h0, backend='auto')),
                                np.asarray(scan(a, b, h0, backend=chosen)))
  with pytest.raises(ValueError, match='chunk_size'):
    linear_scan(a, b, chunk_size=0)


@pytest.mark.parametrize('a_shape, chunk_size', [((DIM,), 1), ((BATCH, 1, DIM), 4),
                                                 ((BATCH, TIME, DIM), 4)])
def test_chunked_custom_vjp_matches_autodiff(a_shape, chunk_size):
  """The chunked backend's hand-written backward pass (the adjoint recurrence) equals
  autodiff of the sequential scan, including the sum over the axes a is broadcast along
  (time-invariant a), a tail chunk (T=9, chunk 4), both directions, complex dtypes."""
  rng = np.random.default_rng(9)
  a = (rng.uniform(-1, 1, a_shape) * np.exp(1j * rng.uniform(0, 6.3, a_shape))).astype(
      np.complex64)
  _, b, h0 = _inputs(10, True)
  w = rng.normal(size=(2,) + b.shape).astype(np.float32)

  def loss(a, b, h0, backend):
    hs = [linear_scan(a, b, h0, reverse=r, backend=backend, chunk_size=chunk_size)
          for r in (False, True)]
    return jnp.sum(w[0] * jnp.abs(hs[0]) ** 2 + w[1] * jnp.abs(hs[1]) ** 2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
  for g_chunk, g_seq, x in zip(grad(a, b, h0, 'chunked'), grad(a, b, h0, 'sequential'),
                               (a, b, h0)):
    assert g_chunk.shape == x.shape and np.abs(np.asarray(g_seq)).max() > 0
    np.testing.assert_allclose(np.asarray(g_chunk), np.asarray(g_seq), rtol=1e-5,
                               atol=1e-5)


def test_chunked_second_order_gradient():
  """Reverse-over-reverse through the custom VJP (its backward pass is itself a chunked
  scan) equals the sequential scan's: a Hessian-vector product in a and b."""
  a, b, h0 = _inputs(11, False)
  v = np.random.default_rng(12).normal(size=(2,) + b.shape).astype(np.float32)

  def hvp(backend):
    def loss(a, b):
      return jnp.sum(jnp.sin(linear_scan(a, b, h0, backend=backend)))
    def grad_dot_v(a, b):
      grads = jax.grad(loss, argnums=(0, 1))(a, b)
      return jnp.sum(grads[0] * v[0]) + jnp.sum(grads[1] * v[1])

    return jax.jit(jax.grad(grad_dot_v, argnums=(0, 1)))(a, b)

  for h_chunk, h_seq in zip(hvp('chunked'), hvp('sequential')):
    assert np.abs(np.asarray(h_seq)).max() > 0
    np.testing.assert_allclose(np.asarray(h_chunk), np.asarray(h_seq), rtol=1e-5,
                               atol=1e-5)
