"""Mamba's selective scan, fused: discretise, recur and read out without ``[B, T, E, N]``.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(arXiv:2312.00752), eqs. (2a)-(2b) and (4) with the Euler ``B`` of sec. 3.5.2. Shapes:
``B`` batch, ``T`` time, ``E`` inner channels, ``N`` state size per channel::

    a_t = exp(delta_t[:, :, None] * A)                      # [B, E, N]  (zero-order hold)
    h_t = a_t * h_{t-1} + (delta_t * u_t)[:, :, None] * B_t[:, None, :],   h_{-1} = 0
    y_t = sum_n h_t[:, :, n] * C_t[:, None, n] + D * u_t     # [B, E]

with ``u, delta: [B, T, E]``, ``A: [E, N]``, ``B_t, C_t: [B, N]`` (one group shared by all
channels, as in the reference), ``D: [E]``.

:func:`selective_scan_reference` evaluates this the direct way: it materialises ``a`` and
the inputs as ``[B, T, E, N]`` arrays, runs :func:`seqjax.ops.scan.linear_scan` over them
and contracts all states with ``C``; under autodiff the scan stores them once more. On
CPU that makes the layer memory-bound (64 MiB per array at ``B=1, T=2048, E=512, N=16``).

:func:`selective_scan` is the hardware-aware version of sec. 3.3 adapted to XLA. The time
axis is cut into chunks of ``chunk_size`` steps; a ``lax.scan`` over chunks carries the
state, and each chunk discretises its own ``[B, K, E, N]`` slice (small enough to stay in
cache), advances ``K`` unrolled steps and contracts them with ``C`` at once, so only
``y [B, T, E]`` and the chunk-start states leave the loop. The gradient is a
``jax.custom_vjp``: the forward pass keeps the chunk-start states ``[T/K, B, E, N]``
(``1/K`` of one materialised array), and the backward pass walks the chunks in reverse,
recomputes each chunk's states from its start state and runs the adjoint recurrence
(``lam_t`` = dL/dh_t)::

    lam_t      = C_t[:, None, :] * dy_t[:, :, None] + a_{t+1} * lam_{t+1}
    dC_t       = sum_e dy_t[:, e, None] * h_t[:, e]
    dbar_t     = lam_t * h_{t-1} * a_t             # dL/d(delta_t A)
    dA        += sum_{b,t} dbar_t * delta_t[..., None]
    ddelta_t   = sum_n dbar_t * A + sum_n lam_t * B_t * u_t
    du_t       = delta_t * sum_n lam_t * B_t      (+ D dy_t, through autodiff)
    dB_t       = sum_e lam_t[:, e] * delta_t[:, e] * u_t[:, e]

``D * u`` is outside the custom rule, so autodiff handles it. A custom VJP rather than
``jax.checkpoint`` on the chunk body: both keep the same residuals, but XLA:CPU compiled the
autodiff of the unrolled chunk poorly (2.5-11x slower); ``K = 16`` sits in a flat optimum
(figures in BENCHMARKS.md, "Design measurements: selective scan"). The custom rule
supports reverse mode only (``jax.grad``/``vjp``), not ``jax.jvp``.

:data:`SELECTIVE_SCAN` is the implementation switch between the two (site
``selective_scan``, see ``seqjax.ops.switch``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from seqjax.ops.scan import linear_scan
from seqjax.ops.switch import Switch

Array = jax.Array

DEFAULT_CHUNK_SIZE = 16

# ``auto`` is the fused scan on every platform: in a whole Mamba block (d_model=256,
# forward + backward) it took 0.26-0.38x the materialised path's time on CPU at
# T=1024-2048 (BENCHMARKS.md, section 4). Not measured on accelerators.
SELECTIVE_SCAN = Switch('selective_scan', ('fused', 'materialized'),
                        lambda platform, time: 'fused',
                        "Mamba's selective scan: fused (chunked, custom VJP, never "
                        '[B, T, E, N]) or materialised through linear_scan; '
                        'ops/selective_scan.py')


def selective_scan_reference(u: Array, delta: Array, a: Array, b: Array, c: Array,
                             d: Array | None = None, *,
                             scan_backend: str = 'sequential') -> Array:
  """The selective scan with materialised ``[B, T, E, N]`` decays and inputs.

  Args:
    u: input ``[B, T, E]``.
    delta: step sizes ``[B, T, E]`` (positive).
    a: continuous-time state matrix (diagonal per channel) ``[E, N]``.
    b, c: input and output projections ``[B, T, N]``.
    d: skip connection ``[E]`` or ``None`` (no skip).
    scan_backend: ``linear_scan`` backend for the recurrence.

  Returns:
    ``y [B, T, E]`` (see the module docstring for the equations).
  """
  a_bar = jnp.exp(delta[..., None] * a)
  bx = (delta * u)[..., None] * b[:, :, None, :]
  h = linear_scan(a_bar, bx, backend=scan_backend, axis=1)
  y = jnp.einsum('bten,btn->bte', h, c)
  return y if d is None else y + d * u


def _to_chunks(v: Array, k: int) -> Array:
  """``[B, T, ...]`` -> ``[ceil(T/K), B, K, ...]``, zero-padded at the end of time.

  Zero ``delta`` makes a padded step the identity (``a = 1``, no input), and zero ``dy``
  gives it no adjoint, so padding changes neither the outputs nor the gradients.
  """
  bsz, t = v.shape[:2]
  pad = -t % k
  v = jnp.pad(v, ((0, 0), (0, pad)) + ((0, 0),) * (v.ndim - 2))
  return jnp.moveaxis(v.reshape((bsz, (t + pad) // k, k) + v.shape[2:]), 1, 0)


def _from_chunks(v: Array, t: int) -> Array:
  """Inverse of :func:`_to_chunks`: ``[T/K, B, K, ...]`` -> ``[B, T, ...]``."""
  v = jnp.moveaxis(v, 0, 1)
  return v.reshape(v.shape[:1] + (-1,) + v.shape[3:])[:, :t]


def _chunk_states(a: Array, h: Array, u: Array, delta: Array,
                  b: Array) -> tuple[Array, Array]:
  """``K`` steps from state ``h [B, E, N]`` over one chunk (``u, delta [B, K, E]``,
  ``b [B, K, N]``): returns the decays ``a_bar`` and the states, both ``[B, K, E, N]``."""
  a_bar = jnp.exp(delta[..., None] * a)
  bx = (delta * u)[..., None] * b[:, :, None, :]
  states = []
  # Unrolled: K is a small constant, and one fused kernel per chunk beats K scan steps.
  for j in range(u.shape[1]):
    h = a_bar[:, j] * h + bx[:, j]
    states.append(h)
  return a_bar, jnp.stack(states, 1)


def _forward(u, delta, a, b, c, k):
  """``y [B, T, E]`` (without ``D u``) and the chunk-start states ``[T/K, B, E, N]``."""
  t = u.shape[1]

  def chunk(h, xs):
    u_k, delta_k, b_k, c_k = xs
    _, states = _chunk_states(a, h, u_k, delta_k, b_k)
    return states[:, -1], (h, jnp.einsum('bken,bkn->bke', states, c_k))

  h0 = jnp.zeros(u.shape[:1] + a.shape, u.dtype)
  xs = tuple(_to_chunks(v, k) for v in (u, delta, b, c))
  _, (starts, y) = jax.lax.scan(chunk, h0, xs)
  return _from_chunks(y, t), starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fused(u, delta, a, b, c, k):
  return _forward(u, delta, a, b, c, k)[0]


def _fused_fwd(u, delta, a, b, c, k):
  y, starts = _forward(u, delta, a, b, c, k)
  return y, (u, delta, a, b, c, starts)


def _fused_bwd(k, residuals, dy):
  u, delta, a, b, c, starts = residuals
  t = u.shape[1]

  def chunk(carry, xs):
    # lam: a_{t+1} * lam_{t+1} flowing into the last step of this chunk.
    lam, da = carry
    h_start, u_k, delta_k, b_k, c_k, dy_k = xs
    a_bar, states = _chunk_states(a, h_start, u_k, delta_k, b_k)
    prev = jnp.concatenate([h_start[:, None], states[:, :-1]], 1)  # h_{t-1}
    from_y = dy_k[..., None] * c_k[:, :, None, :]
    lams = [None] * k
    for j in reversed(range(k)):
      lam = lam + from_y[:, j]
      lams[j] = lam
      lam = a_bar[:, j] * lam
    lams = jnp.stack(lams, 1)                                    # [B, K, E, N]
    d_bar = lams * prev * a_bar                                  # dL/d(delta A)
    lam_b = jnp.einsum('bken,bkn->bke', lams, b_k)
    ddelta = jnp.einsum('bken,en->bke', d_bar, a) + lam_b * u_k
    du = lam_b * delta_k
    db = jnp.einsum('bken,bke->bkn', lams, delta_k * u_k)
    dc = jnp.einsum('bke,bken->bkn', dy_k, states)
    da = da + jnp.einsum('bken,bke->en', d_bar, delta_k)
    return (lam, da), (du, ddelta, db, dc)

  xs = (starts,) + tuple(_to_chunks(v, k) for v in (u, delta, b, c, dy))
  (_, da), grads = jax.lax.scan(chunk, (jnp.zeros_like(starts[0]), jnp.zeros_like(a)),
                                xs, reverse=True)
  du, ddelta, db, dc = (_from_chunks(g, t) for g in grads)
  return du, ddelta, da, db, dc


_fused.defvjp(_fused_fwd, _fused_bwd)


def selective_scan(u: Array, delta: Array, a: Array, b: Array, c: Array,
                   d: Array | None = None, *,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """The selective scan, fused (see the module docstring); same function as
  :func:`selective_scan_reference`.

  Args:
    u: input ``[B, T, E]``.
    delta: step sizes ``[B, T, E]`` (positive).
    a: continuous-time state matrix (diagonal per channel) ``[E, N]``.
    b, c: input and output projections ``[B, T, N]``.
    d: skip connection ``[E]`` or ``None`` (no skip).
    chunk_size: ``K``, time steps per chunk (any ``T``: the last chunk is padded).

  Returns:
    ``y [B, T, E]`` in the common dtype of the inputs.

  Raises:
    ValueError: ``chunk_size`` is not a positive integer.
  """
  if not (isinstance(chunk_size, int) and chunk_size >= 1):
    raise ValueError(f'selective_scan chunk_size={chunk_size!r} must be a positive integer')
  dtype = jnp.result_type(u, delta, a, b, c)
  u, delta, a, b, c = (jnp.asarray(v, dtype) for v in (u, delta, a, b, c))
  y = _fused(u, delta, a, b, c, chunk_size)
  return y if d is None else y + d * u
