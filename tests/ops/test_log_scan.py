"""``seqjax.ops.log_scan.log_space_scan`` against a float64 NumPy loop of
``h_t = a_t h_{t-1} + b_t``: chunk boundaries, an initial state, no-input steps, long
sequences in float32, finite gradients through a no-input prefix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops.log_scan import NEG_INF, log_space_scan


def np_recurrence(a, b, h0):
  h, out = h0, np.zeros_like(b)
  for t in range(b.shape[1]):
    h = a[:, t] * h + b[:, t]
    out[:, t] = h
  return out


@pytest.mark.parametrize('time, chunk', [(1, 4), (7, 3), (8, 8), (9, 64)])
def test_matches_the_recurrence(time, chunk):
  rng = np.random.default_rng(time)
  a = rng.uniform(0.05, 1.0, (2, time, 3))
  b = rng.uniform(0.01, 2.0, (2, time, 3))
  h0 = rng.uniform(0.1, 1.0, (2, 3))
  got = log_space_scan(jnp.log(a), jnp.log(b), jnp.log(h0), chunk=chunk)
  np.testing.assert_allclose(np.exp(got), np_recurrence(a, b, h0), rtol=2e-6)
  zero_h0 = log_space_scan(jnp.log(a), jnp.log(b), chunk=chunk)
  np.testing.assert_allclose(np.exp(zero_h0), np_recurrence(a, b, 0 * h0), rtol=2e-6)


def test_long_sequences_keep_float32_precision():
  """At T=4096 with log a ~ -1.2 the whole-sequence formula would work with numbers near
  5000; by chunks the relative error stays at float32 round-off. Strong decays (a = 1e-3)
  span hundreds of nats within one chunk, beyond float32's exponent range."""
  rng = np.random.default_rng(0)
  a = rng.uniform(0.001, 0.7, (1, 4096, 2))
  b = rng.uniform(0.5, 1.5, (1, 4096, 2))
  want = np_recurrence(a, b, np.zeros((1, 2)))
  got = np.exp(np.asarray(log_space_scan(jnp.log(a).astype(jnp.float32),
                                         jnp.log(b).astype(jnp.float32))))
  np.testing.assert_allclose(got, want, rtol=5e-5)   # one chunk of 4096: 8e-4


def test_no_input_steps_carry_the_state_and_keep_gradients_finite():
  """``log_a = 0, log_b = NEG_INF`` is the identity step, also as a whole prefix (where the
  state is still exactly 0)."""
  rng = np.random.default_rng(1)
  la = jnp.asarray(np.log(rng.uniform(0.2, 1.0, (2, 6, 3))), jnp.float32)
  lb = jnp.asarray(np.log(rng.uniform(0.2, 1.0, (2, 6, 3))), jnp.float32)
  skip = jnp.asarray(np.array([[1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 1, 1]], bool))[..., None]
  la_s, lb_s = jnp.where(skip, la, 0.0), jnp.where(skip, lb, NEG_INF)
  h = np.exp(np.asarray(log_space_scan(la_s, lb_s, chunk=4)))
  want = np_recurrence(np.exp(np.asarray(la_s)), np.where(skip, np.exp(lb), 0.0),
                       np.zeros((2, 3)))
  np.testing.assert_allclose(h, want, rtol=2e-6, atol=1e-30)
  grads = jax.grad(lambda la, lb: jnp.sum(jnp.exp(log_space_scan(
      jnp.where(skip, la, 0.0), jnp.where(skip, lb, NEG_INF), chunk=4))),
                   argnums=(0, 1))(la, lb)
  assert all(np.all(np.isfinite(g)) for g in grads)
