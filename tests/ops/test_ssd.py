"""SSD (``seqjax.ops.ssd``, Dao & Gu 2024) against a float64 NumPy loop of the recurrence
``h_t = exp(a_t) h_{t-1} + x_t B_t^T, y_t = h_t C_t``: every chunk size, an initial and
the final state, and the chunked form against the step in gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops.ssd import ssd_chunked, ssd_step

B, T, H, P, N = 2, 11, 3, 2, 4


def np_ssd(x, a, b, c, h0):
  h, y = h0.copy(), np.zeros_like(x)
  for t in range(x.shape[1]):
    h = np.exp(a[:, t])[..., None, None] * h + np.einsum('bhp,bn->bhpn', x[:, t], b[:, t])
    y[:, t] = np.einsum('bhpn,bn->bhp', h, c[:, t])
  return y, h


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(B, T, H, P)), -rng.uniform(0, 2, (B, T, H)),
          rng.normal(size=(B, T, N)), rng.normal(size=(B, T, N)),
          rng.normal(size=(B, H, P, N)))


@pytest.mark.parametrize('chunk', [1, 3, 11, 64])
def test_chunked_form_matches_the_recurrence(chunk):
  args = _inputs()
  want_y, want_h = np_ssd(*args)
  y, h = jax.jit(lambda *a: ssd_chunked(*a[:4], a[4], chunk=chunk))(
      *(jnp.asarray(v, jnp.float32) for v in args))
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)


def test_chunked_and_step_gradients_agree():
  x, a, b, c, h0 = (jnp.asarray(v, jnp.float32) for v in _inputs(1))
  w = jnp.asarray(np.random.default_rng(2).normal(size=(B, T, H, P)), jnp.float32)

  def chunked(x, a, b, c):
    return jnp.sum(w * ssd_chunked(x, a, b, c, h0, chunk=4)[0])

  def stepped(x, a, b, c):
    body = lambda h, xs: ssd_step(h, *xs)
    _, y = jax.lax.scan(body, h0, tuple(jnp.swapaxes(v, 0, 1) for v in (x, a, b, c)))
    return jnp.sum(w * jnp.swapaxes(y, 0, 1))

  got, want = jax.jit(lambda *v: (jax.grad(chunked, (0, 1, 2, 3))(*v),
                                  jax.grad(stepped, (0, 1, 2, 3))(*v)))(x, a, b, c)
  for g, s in zip(got, want):
    np.testing.assert_allclose(g, s, rtol=1e-4, atol=1e-4)
