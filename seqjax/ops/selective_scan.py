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

:func:`selective_scan` is the hardware-aware version of sec. 3.3 adapted to XLA:CPU: a
loop over time whose state stays in cache. Inputs go time-major (``[T, B, E]``) so that
each step reads contiguous rows, and the state is kept as ``[B, N, E]`` (``E`` minor):
the contraction with ``C`` over ``N`` is then ``N`` multiply-adds of ``E``-wide vectors
rather than a reduction (XLA:CPU hands small reductions to a YNNPACK kernel whose
per-call cost dominated a step), and nothing ``[B, T, E, N]`` is ever formed. A
``lax.scan`` over chunks of ``chunk_size`` steps carries the state and keeps each
chunk-start state. A step of a loop costs XLA:CPU a few kernel launches, each a pass
over the state in cache, so the loop over a chunk's steps does only the recurrence's
multiply-add with the input term ``delta_t u_t B_t`` fused into it: a chunk's decays are
computed before it (``[K, B, N, E]``, one vectorised pass: the exponential is the costly
part) and its read-out with ``C`` after it (unrolling the step loop measured 2-7x
slower: XLA fuses the unrolled chain and recomputes it for every output). The gradient
is a ``jax.custom_vjp``: the backward pass walks the chunks in reverse, recomputes a
chunk's decays and states from its start state (recompute, not store: only ``[T/K, B, N,
E]`` starts are kept; storing every state was 1.17-1.46x slower) in the same loop as the
adjoint recurrence (``lam_t`` = dL/dh_t, again one multiply-add per step; the two run in
opposite directions and do not depend on each other) and then forms every gradient of
the chunk at once from the stacked states, decays and adjoints (moving that work out of
the steps took the gradient at ``B=1, T=2048, E=512`` from 118 to 94 ms and at the
comparison's ``B=32, E=64-128, T=40-136`` 7-16 % down; BENCHMARKS.md, "Mamba after issue
16, round 3")::

    lam_t      = C_t[:, None, :] * dy_t[:, :, None] + a_{t+1} * lam_{t+1}
    dC_t       = sum_e dy_t[:, e, None] * h_t[:, e]
    dbar_t     = lam_t * h_{t-1} * a_t             # dL/d(delta_t A)
    dA        += sum_{b,t} dbar_t * delta_t[..., None]
    ddelta_t   = sum_n dbar_t * A + sum_n lam_t * B_t * u_t
    du_t       = delta_t * sum_n lam_t * B_t      (+ D dy_t, through autodiff)
    dB_t       = sum_e lam_t[:, e] * delta_t[:, e] * u_t[:, e]

``dA`` is accumulated per batch row in the carry and summed once at the end. Large
batches are scanned in groups of rows (``lax.map``) sized so that a chunk's
``[K, rows, N, E]`` buffers fit in L2 (:data:`GROUP_BYTES`). ``D * u`` is outside the
custom rule, so autodiff handles it. The custom rule supports reverse mode only
(``jax.grad``/``vjp``), not ``jax.jvp``. Figures: BENCHMARKS.md, "Mamba after issue
16" (rounds 1-7) and "Design measurements: selective scan, round 2".

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
# Batch rows are scanned in groups whose chunk buffers (``K x rows x N x E`` floats) fit
# in this many bytes, so a chunk's states and adjoints stay near the core: at B=32,
# E=128, T=136 grouping took the gradient from 200 to 116 ms (a machine with 2 MiB of L2
# per core, where 128 KiB - 1 MiB were within noise of each other). On the current one
# (512 KiB of L2 per core) 128 and 256 KiB groups took 1.15-1.31x the time at B=32,
# T=40-136, and 1 MiB 1.01-1.04x (BENCHMARKS.md, "Mamba after issue 16, round 7").
GROUP_BYTES = 512 * 1024

# ``auto`` is the fused scan on every platform: in a whole Mamba block (d_model=256,
# forward + backward) it took 0.15-0.29x the materialised path's time on CPU at
# T=256-8192 (BENCHMARKS.md, section 4). Not measured on accelerators.
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
  """``[B, T, ...]`` -> time-major ``[ceil(T/K), K, B, ...]``, zero-padded at the end.

  Zero ``delta`` makes a padded step the identity (``a = 1``, no input), and zero ``dy``
  gives it no adjoint, so padding changes neither the outputs nor the gradients.
  """
  t = v.shape[1]
  pad = -t % k
  v = jnp.pad(v, ((0, 0), (0, pad)) + ((0, 0),) * (v.ndim - 2))
  v = jnp.moveaxis(v, 1, 0)
  return v.reshape(((t + pad) // k, k) + v.shape[1:])


def _from_chunks(v: Array, t: int) -> Array:
  """Inverse of :func:`_to_chunks`: ``[T/K, K, B, ...]`` -> ``[B, T, ...]``."""
  return jnp.moveaxis(v.reshape((-1,) + v.shape[2:])[:t], 0, 1)


def _contract_n(x: Array, w: Array, per_row: bool) -> Array:
  """``sum_n x[..., n, :] * w[..., n, (:)]`` for ``x [..., N, E]`` and ``w`` either
  ``[..., N]`` (``per_row``: one weight per leading index) or ``[N, E]`` (per channel):
  ``[..., E]``.

  Written as ``N`` multiply-adds so XLA fuses it into one elementwise kernel; a
  ``jnp.sum`` over ``N`` became a separate reduction call, 3-4x slower overall.
  """
  out = None
  for n in range(x.shape[-2]):
    term = x[..., n, :] * (w[..., n, None] if per_row else w[n])
    out = term if out is None else out + term
  return out


def _chunk_decays(a_t: Array, delta_k: Array) -> Array:
  """A chunk's decays ``exp(delta_t A)``, ``[K, B, N, E]``, from ``delta_k [K, B, E]`` and
  the transposed ``A`` (``a_t [N, E]``): one vectorised pass per chunk (the exponential
  is the costly part of a step, so it is not done inside the loop)."""
  return jnp.exp(delta_k[:, :, None, :] * a_t)


def _input(du: Array, b: Array) -> Array:
  """The input term ``delta_t u_t B_t`` of one step, ``[B, N, E]``, from ``du = delta_t u_t
  [B, E]`` and ``b = B_t [B, N]``.

  Formed inside the step, where XLA fuses it into the multiply-add: it is an outer
  product of two vectors, cheaper to recompute than to read back from a ``[K, B, N, E]``
  stack (precomputing it per chunk costs a pass that writes the stack and a read of it
  per step: with the input term formed here, in both loops, the scan's gradient takes
  0.89-0.93x the time at ``B=1, E=512, T=256/2048`` and ``B=32, E=128, T=100``;
  BENCHMARKS.md, "Mamba after issue 16, round 7").
  """
  return du[..., None, :] * b[..., None]


def _chunk_states(h: Array, decays: Array, du_k: Array,
                  b_k: Array) -> tuple[Array, Array]:
  """Eq. (2a) over one chunk: ``(h_end, states [K, B, N, E])`` from the state ``h``
  before it, the chunk's decays, ``du_k = delta u [K, B, E]`` and ``b_k [K, B, N]``. The
  loop body is one multiply-add (each step of a loop costs XLA:CPU a few kernel
  launches and a pass over the state, so everything else is done per chunk)."""
  def step(h, xs):
    decay, du, b = xs
    h = decay * h + _input(du, b)
    return h, h
  return jax.lax.scan(step, h, (decays, du_k, b_k))


def _states_and_adjoints(h: Array, lam: Array, decays: Array, du_k: Array, b_k: Array,
                         dy_k: Array, c_k: Array, states: Array,
                         lams: Array) -> tuple[Array, Array, Array]:
  """One chunk's states (eq. (2a) from the state ``h`` before it) and adjoints, in one
  loop of ``K`` steps: ``(states [K, B, N, E], a_0 * lam_0, lams [K, B, N, E])``.

  ``lam`` enters as ``a_K * lam_K`` from the chunk after. The recomputation runs forward
  through the chunk and the adjoint recurrence ``lam_t = C_t dy_t + a_{t+1} lam_{t+1}``
  backward, and neither needs the other, so step ``i`` does forward step ``i`` and
  backward step ``K-1-i``: half the loop iterations of two scans (the scan's gradient at
  ``B=1, E=512`` took 0.86-0.92x the time at T=256-2048; BENCHMARKS.md, "Host memory,
  round 6"). A ``fori_loop`` writing both stacks in place: the same merged loop as a
  ``lax.scan`` over time-reversed copies of the adjoint's inputs was 2-3 % slower than
  two scans. ``states`` and ``lams`` are scratch stacks of the same shape, overwritten
  entry by entry (the caller carries them from chunk to chunk, so they are never
  zero-filled).
  """
  k = decays.shape[0]

  def step(i, carry):
    h, lam, states, lams = carry
    back = k - 1 - i
    h = decays[i] * h + _input(du_k[i], b_k[i])
    states = jax.lax.dynamic_update_index_in_dim(states, h, i, 0)
    lams = jax.lax.dynamic_update_index_in_dim(
        lams, lam + dy_k[back][:, None, :] * c_k[back][..., None], back, 0)
    # The next carry is read back from the stack, not kept as a second copy: XLA then
    # needs no copy of the carry each step (3-8 % off the gradient at T=256).
    return h, decays[back] * lams[back], states, lams

  _, lam, states, lams = jax.lax.fori_loop(0, k, step, (h, lam, states, lams))
  return states, lam, lams


def _forward(u, delta, a_t, b, c, k):
  """``y [B, T, E]`` (without ``D u``) and the chunk-start states ``[T/K, B, N, E]``."""
  t = u.shape[1]

  def chunk(h, xs):
    u_k, delta_k, b_k, c_k = xs
    h_end, states = _chunk_states(h, _chunk_decays(a_t, delta_k), delta_k * u_k, b_k)
    return h_end, (h, _contract_n(states, c_k, per_row=True))

  h0 = jnp.zeros(u.shape[:1] + a_t.shape, u.dtype)
  xs = tuple(_to_chunks(v, k) for v in (u, delta, b, c))
  _, (starts, y) = jax.lax.scan(chunk, h0, xs)
  return _from_chunks(y, t), starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fused(u, delta, a_t, b, c, k):
  return _forward(u, delta, a_t, b, c, k)[0]


def _fused_fwd(u, delta, a_t, b, c, k):
  y, starts = _forward(u, delta, a_t, b, c, k)
  return y, (u, delta, a_t, b, c, starts)


def _fused_bwd(k, residuals, dy):
  u, delta, a_t, b, c, starts = residuals
  t = u.shape[1]

  def chunk(carry, xs):
    # da: dA per batch row, [B, N, E]; states, lams: the scratch stacks, [K, B, N, E].
    lam, da, states, lams = carry
    h_start, u_k, delta_k, b_k, c_k, dy_k = xs
    decays, du_k = _chunk_decays(a_t, delta_k), delta_k * u_k
    states, lam, lams = _states_and_adjoints(h_start, lam, decays, du_k, b_k, dy_k, c_k,
                                             states, lams)
    # Everything below is per chunk, vectorised over its K steps.
    prev = jnp.concatenate([h_start[None], states[:-1]], 0)  # h_{t-1}, [K, B, N, E]
    d_bar = lams * prev * decays  # dL/d(delta_t A)
    # A batched matrix-vector product, [K, B] of them: as a dot it is formed once; as
    # N multiply-adds XLA fused it into both of its users, reading `lams` twice (the
    # gradient took 1.10-1.16x the time at B=1, E=512; BENCHMARKS.md, round 7).
    lam_b = jnp.einsum('kbne,kbn->kbe', lams, b_k)  # [K, B, E]
    ddelta = _contract_n(d_bar, a_t, per_row=False) + lam_b * u_k
    # dA's sum over the chunk's steps as K multiply-adds (one fused elementwise kernel):
    # as an einsum it became 512 tiny batched matmuls, as jnp.sum over axis 0 a YNNPACK
    # reduction; the gradient at B=1, E=512 took 10.7 / 33.4 / 9.6 ms at T=256 (einsum /
    # sum / this) and 79.4 / 288 / 67.1 ms at T=2048 (BENCHMARKS.md, round 4).
    for step in range(d_bar.shape[0]):
      da = da + d_bar[step] * delta_k[step][:, None, :]
    db = jnp.einsum('kbne,kbe->kbn', lams, du_k)
    dc = jnp.einsum('kbne,kbe->kbn', states, dy_k)
    return (lam, da, states, lams), (lam_b * delta_k, ddelta, db, dc)

  xs = (starts,) + tuple(_to_chunks(v, k) for v in (u, delta, b, c, dy))
  zero = jnp.zeros_like(starts[0])
  # The scratch stacks travel in the carry, so each chunk overwrites the last one's
  # instead of zero-filling fresh ones (a fill per chunk cost 0-4 % of the gradient).
  scratch = jnp.zeros((k,) + zero.shape, zero.dtype)
  (_, da, _, _), grads = jax.lax.scan(chunk, (zero, zero, scratch, scratch), xs,
                                      reverse=True)
  du, ddelta, db, dc = (_from_chunks(g, t) for g in grads)
  return du, ddelta, jnp.sum(da, 0), db, dc


_fused.defvjp(_fused_fwd, _fused_bwd)


def _grouped(u, delta, a_t, b, c, k):
  """:func:`_fused` over groups of batch rows (``lax.map``, zero rows pad the last
  group; a zero row has zero outputs and gradients), sized by :data:`GROUP_BYTES`."""
  bsz = u.shape[0]
  rows = max(1, GROUP_BYTES // (k * a_t.size * u.dtype.itemsize))
  if rows >= bsz:
    return _fused(u, delta, a_t, b, c, k)
  groups = -(-bsz // rows)
  pad = groups * rows - bsz

  def split(v):
    v = jnp.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1))
    return v.reshape((groups, rows) + v.shape[1:])

  y = jax.lax.map(lambda xs: _fused(xs[0], xs[1], a_t, xs[2], xs[3], k),
                  tuple(split(v) for v in (u, delta, b, c)))
  return y.reshape((groups * rows,) + y.shape[2:])[:bsz]


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
  y = _grouped(u, delta, a.T, b, c, chunk_size)
  return y if d is None else y + d * u
