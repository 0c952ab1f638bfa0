"""The mLSTM cell (``seqjax.ops.mlstm``): the parallel, chunkwise and recurrent forms
against a float64 NumPy loop of the xLSTM paper's unstabilised equations (Beck et al.
2024, eqs. 19-27) and against each other, in values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops import mlstm

B, H, T, D = 2, 2, 11, 4


def np_mlstm(q, k, v, i_pre, f_pre):
  """``C_t = f C + i v k^T``-style memory, exactly as written (no stabiliser): fine in
  float64 at these sizes."""
  out = np.zeros_like(v)
  c = np.zeros((B, H, D, D))
  n = np.zeros((B, H, D))
  k = k / np.sqrt(D)
  for t in range(q.shape[2]):
    f = 1 / (1 + np.exp(-f_pre[:, :, t]))
    i = np.exp(i_pre[:, :, t])
    c = f[..., None, None] * c + i[..., None, None] * np.einsum(
        'bhk,bhv->bhkv', k[:, :, t], v[:, :, t])
    n = f[..., None] * n + i[..., None] * k[:, :, t]
    qt = q[:, :, t]
    denom = np.maximum(np.abs(np.einsum('bhk,bhk->bh', n, qt)), 1.0)
    out[:, :, t] = np.einsum('bhkv,bhk->bhv', c, qt) / (denom[..., None] + 1e-6 *
                                                          np.exp(_m(i_pre, f_pre, t)))
  return out


def _m(i_pre, f_pre, t):
  """The stabiliser ``m_t`` (its ``exp`` scales eps back to the unstabilised form)."""
  log_f = np.cumsum(np.log(1 / (1 + np.exp(-f_pre[:, :, :t + 1]))), axis=-1)
  log_d = log_f[..., -1:] - log_f + i_pre[:, :, :t + 1]
  return log_d.max(axis=-1)[..., None]


def _inputs(seed=0, gate_scale=2.0):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=(B, H, T, D)) for _ in range(3))
  i_pre = rng.normal(size=(B, H, T)) * gate_scale
  f_pre = rng.normal(size=(B, H, T)) * gate_scale + 1
  return q, k, v, i_pre, f_pre


def _recurrent(q, k, v, i_pre, f_pre):
  def body(state, xs):
    return mlstm.step(state, *xs)
  xs = (jnp.moveaxis(q, 2, 0), jnp.moveaxis(k, 2, 0), jnp.moveaxis(v, 2, 0),
        jnp.moveaxis(i_pre, 2, 0), jnp.moveaxis(f_pre, 2, 0))
  _, h = jax.lax.scan(body, mlstm.init_state(B, H, D), xs)
  return jnp.moveaxis(h, 0, 2)


FORMS = {
    'parallel': mlstm.parallel,
    'chunkwise-1': lambda *a: mlstm.chunkwise(*a, chunk=1),
    'chunkwise-4': lambda *a: mlstm.chunkwise(*a, chunk=4),
    'chunkwise-64': lambda *a: mlstm.chunkwise(*a, chunk=64),
    'recurrent': _recurrent,
}


def test_every_form_matches_the_papers_equations():
  args = _inputs()
  want = np_mlstm(*args)
  f32 = [jnp.asarray(a, jnp.float32) for a in args]
  run = jax.jit(lambda *a: {name: form(*a) for name, form in FORMS.items()})
  for name, got in run(*f32).items():
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=name)


def test_forms_agree_in_gradients_and_with_large_gates():
  """Input gates up to exp(30) overflow the unstabilised form in float32; the stabilised
  forms still agree with each other (values and gradients of every input)."""
  f32 = [jnp.asarray(a, jnp.float32) for a in _inputs(1, gate_scale=10.0)]
  w = jnp.asarray(np.random.default_rng(2).normal(size=(B, H, T, D)), jnp.float32)

  def grads(form):
    loss = lambda *a: jnp.sum(w * form(*a))
    return form(*f32), jax.grad(loss, argnums=tuple(range(5)))(*f32)

  run = jax.jit(lambda: {name: grads(form) for name, form in FORMS.items()})
  out = run()
  for name, (value, grad) in out.items():
    assert np.all(np.isfinite(value)), name
    np.testing.assert_allclose(value, out['parallel'][0], rtol=1e-4, atol=1e-5,
                               err_msg=name)
    for g, ref in zip(grad, out['parallel'][1]):
      np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4, err_msg=name)
