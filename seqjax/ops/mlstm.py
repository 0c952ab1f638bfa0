"""The mLSTM cell of xLSTM (Beck et al. 2024, arXiv:2405.04517, sec. 2.3 and App. A.3) in
its three forms: parallel (stabilised), chunkwise, and the recurrent step. All three
compute the same function; site ``mlstm`` of the implementation switch picks between the
first two for a whole sequence.

Per head, with ``d = head_dim``, keys scaled by ``1/sqrt(d)``, ``log f_t = log sigmoid(f~_t)``
and the exponential input gate ``i_t = exp(i~_t)`` (eqs. 19-27)::

    C_t = f_t C_{t-1} + i_t k_t v_t^T          matrix memory  [d, d]
    n_t = f_t n_{t-1} + i_t k_t                normaliser     [d]
    h~_t = C_t^T q_t / max(|n_t . q_t|, 1)

Stabilised (App. A.3): the state is kept divided by ``exp(m_t)`` with
``m_t = max(log f_t + m_{t-1}, i~_t)``; then the bound ``1`` becomes ``exp(-m_t)``. Unrolled,
``m_t = max_{s<=t} log D_ts`` with the decay matrix ``log D_ts = F_t - F_s + i~_s``
(``F_t = sum_{r<=t} log f_r``), which is the parallel form's row-wise stabiliser::

    h~ = (S / (max(|S 1|, exp(-m)) + eps)) V,   S = (Q K^T / sqrt(d)) * exp(log D - m)

``m_0 = -inf`` (not 0): the recurrent stabiliser then equals the parallel one exactly, so
the forms agree to round-off (with ``m_0 = 0`` the bound ``exp(-m)`` differs while every
``m_t < 0``). ``eps = 1e-6`` as in the authors' code.

Chunkwise (the xLSTM paper's chunkwise-parallel training form, as in the authors' kernels):
within a chunk of ``L`` steps the parallel form; between chunks the stabilised state
``(C, n, m)`` is carried by ``lax.scan``, entering row ``t`` of a chunk with decay ``b_t + m``
(``b_t`` the chunk-local cumulative ``log f``). Memory is ``O(T L)`` instead of ``O(T^2)``.

Shapes: ``q, k, v`` ``[batch, heads, time, d]``; ``i_pre, f_pre`` ``[batch, heads, time]``
(pre-activations); outputs ``[batch, heads, time, d]``; all in float32 or wider.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seqjax.ops.switch import Switch

Array = jax.Array

EPS = 1e-6
NEG_INF = -1e30
# exp(-m) bounds the normaliser from below; m is clamped first so that a position with no
# input at all (padding before any token) gives a finite bound and finite gradients.
_M_FLOOR = -80.0

FORMS = ('parallel', 'chunkwise')


def _rule(platform: str, time: int | None) -> str:
  """``chunkwise`` everywhere: for ``time <= chunk`` it is the parallel form on one chunk,
  and beyond it keeps memory ``O(T L)``."""
  del platform, time
  return 'chunkwise'


MLSTM = Switch('mlstm', FORMS, _rule,
               'mLSTM cell over a sequence: parallel [T, T] form or chunkwise (parallel '
               'within chunks, recurrent between); ops/mlstm.py')


def _lower_bound(m: Array) -> Array:
  return jnp.exp(-jnp.maximum(m, _M_FLOOR))


def parallel(q: Array, k: Array, v: Array, i_pre: Array, f_pre: Array) -> Array:
  """The stabilised parallel form (module doc); ``O(T^2)`` memory."""
  t = q.shape[2]
  log_f = jnp.cumsum(jax.nn.log_sigmoid(f_pre), axis=-1)                 # F_t
  causal = jnp.tril(jnp.ones((t, t), bool))
  log_d = jnp.where(causal, log_f[..., :, None] - log_f[..., None, :] + i_pre[..., None, :],
                    NEG_INF)                                             # [b, h, t, s]
  m = jnp.max(log_d, axis=-1)
  scores = jnp.einsum('bhtd,bhsd->bhts', q, k) / math.sqrt(q.shape[-1])
  # The where keeps exp(0) of a masked entry out when a row has no input at all.
  s = scores * jnp.where(causal, jnp.exp(log_d - m[..., None]), 0.0)
  norm = jnp.maximum(jnp.abs(jnp.sum(s, axis=-1)), _lower_bound(m)) + EPS
  return jnp.einsum('bhts,bhsd->bhtd', s / norm[..., None], v)


def init_state(batch: int, heads: int, d: int, dtype=jnp.float32) -> dict[str, Array]:
  """``C`` ``[batch, heads, d, d]`` (key-major), ``n`` ``[batch, heads, d]``, ``m``
  ``[batch, heads]`` (``-inf``: no input yet)."""
  return {'C': jnp.zeros((batch, heads, d, d), dtype), 'n': jnp.zeros((batch, heads, d), dtype),
          'm': jnp.full((batch, heads), NEG_INF, dtype)}


def step(state: dict[str, Array], q: Array, k: Array, v: Array, i_pre: Array,
         f_pre: Array) -> tuple[dict[str, Array], Array]:
  """One recurrent step: ``q, k, v`` ``[batch, heads, d]``, gates ``[batch, heads]``."""
  k = k / math.sqrt(q.shape[-1])
  log_f = jax.nn.log_sigmoid(f_pre)
  m = jnp.maximum(log_f + state['m'], i_pre)
  decay = jnp.exp(log_f + state['m'] - m)[..., None]
  gain = jnp.exp(i_pre - m)[..., None]
  c = decay[..., None] * state['C'] + gain[..., None] * k[..., :, None] * v[..., None, :]
  n = decay * state['n'] + gain * k
  norm = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), _lower_bound(m)) + EPS
  h = jnp.einsum('bhkv,bhk->bhv', c, q) / norm[..., None]
  return {'C': c, 'n': n, 'm': m}, h


def chunkwise(q: Array, k: Array, v: Array, i_pre: Array, f_pre: Array,
              chunk: int = 64) -> Array:
  """The chunkwise form (module doc): ``lax.scan`` over chunks of ``min(chunk, time)``
  steps (the last one padded with no-op steps: ``f = 1``, ``i = 0``)."""
  batch, heads, time, d = q.shape
  size = max(1, min(chunk, time))
  n = -(-time // size)
  pad = n * size - time
  log_f = jax.nn.log_sigmoid(f_pre)
  if pad:
    q, k, v = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, k, v))
    log_f = jnp.pad(log_f, ((0, 0), (0, 0), (0, pad)))
    i_pre = jnp.pad(i_pre, ((0, 0), (0, 0), (0, pad)), constant_values=NEG_INF)
  k = k / math.sqrt(d)
  # [n, batch, heads, size, ...]: the loop walks the leading axis.
  split = lambda a: jnp.moveaxis(a.reshape(batch, heads, n, size, *a.shape[3:]), 2, 0)
  causal = jnp.tril(jnp.ones((size, size), bool))

  def one_chunk(state, xs):
    qc, kc, vc, ic, fc = xs
    b = jnp.cumsum(fc, axis=-1)                                          # [b, h, L]
    log_d = jnp.where(causal, b[..., :, None] - b[..., None, :] + ic[..., None, :],
                      NEG_INF)
    inter = b + state['m'][..., None]                                    # decay of C_prev
    m = jnp.maximum(inter, jnp.max(log_d, axis=-1))                     # [b, h, L]
    s = jnp.einsum('bhtd,bhsd->bhts', qc, kc) * jnp.where(
        causal, jnp.exp(log_d - m[..., None]), 0.0)
    w_prev = jnp.exp(inter - m)[..., None]
    num = w_prev * jnp.einsum('bhtk,bhkv->bhtv', qc, state['C']) + jnp.einsum(
        'bhts,bhsv->bhtv', s, vc)
    den = w_prev[..., 0] * jnp.einsum('bhtk,bhk->bht', qc, state['n']) + jnp.sum(s, -1)
    h = num / (jnp.maximum(jnp.abs(den), _lower_bound(m)) + EPS)[..., None]
    # The state after the chunk, stabilised by m at its last step.
    m_last = m[..., -1]
    w_in = jnp.exp(b[..., -1:] - b + ic - m_last[..., None])[..., None]  # [b, h, L, 1]
    w_c = jnp.exp(b[..., -1] + state['m'] - m_last)[..., None]
    new = {'C': w_c[..., None] * state['C'] + jnp.einsum('bhsk,bhsv->bhkv', w_in * kc, vc),
           'n': w_c * state['n'] + jnp.sum(w_in * kc, axis=-2), 'm': m_last}
    return new, h

  _, h = jax.lax.scan(one_chunk, init_state(batch, heads, d, q.dtype),
                      tuple(split(a) for a in (q, k, v, i_pre, log_f)))
  return jnp.moveaxis(h, 0, 2).reshape(batch, heads, n * size, d)[:, :, :time]
