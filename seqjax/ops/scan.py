"""Diagonal linear recurrences ``h_t = a_t * h_{t-1} + b_t`` behind one switch (site ``scan``).

Every linear state-space layer (S4D, Mamba, LRU/Griffin-style RNNs) reduces its sequence
mixing to this elementwise recurrence, so it lives here once with interchangeable backends,
chosen through :data:`SCAN` (see ``seqjax.ops.switch``):

* ``'sequential'``: ``jax.lax.scan`` over time, O(T) depth, O(1) extra memory per step.
  It first moves time to the leading axis (and the result back): on CPU those two
  transposes cost more than the recurrence itself.
* ``'associative'``: ``jax.lax.associative_scan`` (Blelloch 1990) with the operator on
  pairs ``(a, b)`` that represent the affine map ``h -> a * h + b``::

      (a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)        # apply map 1, then map 2

  O(log T) depth and O(T) work (about twice the sequential flops, plus the ``a`` products),
  paying off on accelerators with long sequences (Smith et al. 2023, "Simplified State
  Space Layers", sec. 2.2; Gu & Dao 2023, sec. 3.3). Its compiled program has one block
  per recursion level, so it grows like log T (never like T).
* ``'chunked'``: a ``fori_loop`` over chunks of ``chunk_size`` steps (default 1) that
  carries the state and updates the output buffer in place: each iteration slices its
  chunk of ``a`` and of the buffer along ``axis`` (no transposes), advances the chunk's
  steps in one fused elementwise kernel and writes the states back over the chunk. The
  buffer starts as ``b`` itself, so the bytes moved are the minimum (read ``a``, ``b``;
  write ``h``) with no zero-filled output, and a ``b`` computed by the caller is written
  straight into it. A remainder ``T % chunk_size`` is an unrolled tail (any ``T``, no
  padding); the program does not grow with ``T``. Its gradient is a custom VJP that runs
  the adjoint recurrence as one more chunked scan backwards in time (autodiff of the loop
  would accumulate a full-size cotangent per iteration: O(T^2)); like every custom VJP it
  supports reverse mode (``jax.grad``, ``jax.vjp``, also nested), not ``jax.jvp``.
  One step per chunk is the default because a fused chunk of C steps recomputes the chain
  for each of its C outputs, and larger chunks measured no faster; the alternatives tried
  (``lax.scan`` over chunks, unrolling, a two-pass scheme) and why the loop itself is the
  limit on XLA:CPU are in BENCHMARKS.md ("Design measurements: linear scan").
* ``'auto'``: :func:`select_backend` per platform and length.

Broadcasting: ``a`` and ``b`` are broadcast against each other with NumPy rules (aligned
from the right); ``axis`` indexes the broadcast shape. So a time-invariant ``a`` can be
passed as ``[d, n]`` (or ``[1, 1, d, n]``) next to ``b`` ``[batch, time, d, n]``; the
sequential and chunked backends then keep it out of the scanned inputs instead of
materialising it T times. ``h0`` is broadcast against the per-step state shape (the
broadcast shape without ``axis``). Real and complex dtypes are both supported; the result
dtype is the common dtype of ``a``, ``b`` and ``h0``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

DEFAULT_CHUNK_SIZE = 1
BACKENDS = ('sequential', 'associative', 'chunked')


def select_backend(platform: str, time: int | None) -> str:
  """The backend ``'auto'`` uses on ``platform`` for a scan of ``time`` steps.

  CPU: ``'chunked'`` (one step per chunk) at every measured shape, tiny ones included: it
  took 0.4-0.75x the sequential scan's time from T=256 to 4096 and D=16 to 1024, float32
  and complex64, and the associative scan was 2-3x slower than sequential everywhere
  (table in BENCHMARKS.md, "Design measurements: linear scan"; ``scripts/benchmarks/
  scan.py`` re-measures it). Other platforms were not measured here: on GPU/TPU the
  associative scan's O(log T) depth is the usual choice for long sequences (Smith et al.
  2023; recurrentgemma resolves its AUTO scan the same way), and a short (or unknown)
  length stays sequential.
  """
  if platform == 'cpu':
    return 'chunked'
  return 'associative' if time is not None and time >= 256 else 'sequential'


SCAN = Switch('scan', BACKENDS, select_backend,
              'linear recurrence h_t = a_t h_{t-1} + b_t (S4D scan form, Mamba materialised '
              'form); ops/scan.py')


def _sequential(a: Array, b: Array, h0: Array | None, reverse: bool,
                axis: int) -> Array:
  """``lax.scan`` backend. ``a``: same rank as ``b``, size 1 or T on ``axis``."""
  if h0 is None:
    h0 = jnp.zeros(b.shape[:axis] + b.shape[axis + 1:], b.dtype)
  # Time goes to the leading axis once, so each step slices contiguous memory and the
  # loop body holds no transposes.
  b_t = jnp.moveaxis(b, axis, 0)
  a_const = a.shape[axis] == 1
  if a_const:
    # Time-invariant decay (S4D's A-bar): close over it instead of scanning over T copies.
    a_c = jnp.broadcast_to(jnp.squeeze(a, axis), h0.shape)

    def step(h, b_k):
      h = a_c * h + b_k
      return h, h

    _, hs = jax.lax.scan(step, h0, b_t, reverse=reverse)
  else:
    a_t = jnp.moveaxis(jnp.broadcast_to(a, b.shape), axis, 0)

    def step(h, ab_k):
      a_k, b_k = ab_k
      h = a_k * h + b_k
      return h, h

    _, hs = jax.lax.scan(step, h0, (a_t, b_t), reverse=reverse)
  return jnp.moveaxis(hs, 0, axis)


def _compose(first: tuple[Array, Array],
             second: tuple[Array, Array]) -> tuple[Array, Array]:
  """Composition of the affine maps ``h -> a*h + b``: apply ``first``, then ``second``."""
  a1, b1 = first
  a2, b2 = second
  return a1 * a2, a2 * b1 + b2


def _associative(a: Array, b: Array, h0: Array | None, reverse: bool,
                 axis: int) -> Array:
  """``lax.associative_scan`` backend with the affine-map composition operator."""
  a = jnp.broadcast_to(a, b.shape)
  if h0 is not None:
    # Fold h0 into the first step's offset (b_0 <- a_0 h0 + b_0) rather than prepending
    # an element: the scan length stays T and no concatenate/slice copies are needed.
    first = b.shape[axis] - 1 if reverse else 0
    idx = (slice(None),) * axis + (first,)
    b = b.at[idx].add(a[idx] * h0)
  # With reverse=True, lax.associative_scan hands fn the later-in-time element first,
  # which is exactly the map applied first in h_t = a_t h_{t+1} + b_t.
  _, h = jax.lax.associative_scan(_compose, (a, b), reverse=reverse, axis=axis)
  return h


def _chunked_loop(a: Array, b: Array, h0: Array, reverse: bool, axis: int,
                 chunk_size: int) -> Array:
  """The chunked backend's forward loop (no custom gradient). ``h0``: state shape."""
  time = b.shape[axis]
  a_const = a.shape[axis] == 1
  if a_const:
    a_c = jnp.broadcast_to(jnp.squeeze(a, axis), h0.shape)

  def run(h, out, start, length):
    """``length`` (static) steps from ``start``. ``out`` still holds ``b`` there: it is
    read and overwritten with the states in place."""
    bc = jax.lax.dynamic_slice_in_dim(out, start, length, axis)
    ac = None if a_const else jax.lax.dynamic_slice_in_dim(a, start, length, axis)
    hs = [None] * length
    for j in (reversed(range(length)) if reverse else range(length)):
      a_j = a_c if a_const else jax.lax.index_in_dim(ac, j, axis, keepdims=False)
      h = a_j * h + jax.lax.index_in_dim(bc, j, axis, keepdims=False)
      hs[j] = h
    return h, jax.lax.dynamic_update_slice_in_dim(out, jnp.stack(hs, axis), start, axis)

  num_chunks, tail = divmod(time, chunk_size)
  # The output buffer starts as b: no zero-fill pass, and when b is an intermediate of
  # the caller's program XLA writes it straight into this buffer.
  h, out = h0, b
  if tail and reverse:
    # The reverse pass meets the tail (the last positions) first.
    h, out = run(h, out, num_chunks * chunk_size, tail)

  def body(n, carry):
    start = (num_chunks - 1 - n if reverse else n) * chunk_size
    return run(*carry, start, chunk_size)

  if num_chunks:
    h, out = jax.lax.fori_loop(0, num_chunks, body, (h, out))
  if tail and not reverse:
    _, out = run(h, out, num_chunks * chunk_size, tail)
  return out


def _shift_in_time(x: Array, first: Array, axis: int, toward_end: bool) -> Array:
  """``x`` moved one step along ``axis``: ``toward_end`` gives ``[first, x_0, ...,
  x_{T-2}]``, otherwise ``[x_1, ..., x_{T-1}, first]``. ``first``: ``x`` without
  ``axis``."""
  first = jnp.expand_dims(first, axis)
  time = x.shape[axis]
  if toward_end:
    return jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, time - 1, axis=axis)],
                           axis)
  return jnp.concatenate([jax.lax.slice_in_dim(x, 1, time, axis=axis), first], axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _chunked_scan(a: Array, b: Array, h0: Array, reverse: bool, axis: int,
                  chunk_size: int) -> Array:
  """``_chunked_loop`` with the adjoint-recurrence gradient below."""
  return _chunked_loop(a, b, h0, reverse, axis, chunk_size)


def _chunked_scan_fwd(a, b, h0, reverse, axis, chunk_size):
  h = _chunked_loop(a, b, h0, reverse, axis, chunk_size)
  return h, (a, h, h0)


def _chunked_scan_bwd(reverse, axis, chunk_size, residuals, g):
  """Backward pass as one more linear scan, in the opposite direction.

  For the forward direction, the total cotangent of ``h_t`` is ``d_t = g_t + a_{t+1}
  d_{t+1}`` (the adjoint recurrence), so ``d = linear_scan(a shifted one step to the
  past, g, reverse=True)``; then ``db_t = d_t``, ``da_t = d_t h_{t-1}`` (``h_{-1} = h0``)
  and ``dh0 = a_0 d_0``. JAX cotangents are transposes, not conjugate transposes, so the
  same formulas hold for complex dtypes. Autodiff of the chunk loop would instead add a
  full-size cotangent of the sliced ``a`` and ``b`` at every iteration (O(T^2) work).
  """
  a, h, h0 = residuals
  time = h.shape[axis]
  first, last = (time - 1, 0) if reverse else (0, time - 1)
  if a.shape[axis] == 1:
    a_adj = a  # time-invariant: the shifted decay is the same decay
  else:
    # The adjoint's step t uses a_{t+1} (a_{t-1} if reverse); the value shifted in is
    # multiplied by the adjoint's zero initial state, so any value works.
    a_adj = _shift_in_time(a, jnp.take(a, last, axis), axis, toward_end=reverse)
  d = _chunked_scan(a_adj, g, jnp.zeros_like(h0), not reverse, axis, chunk_size)
  h_prev = _shift_in_time(h, h0, axis, toward_end=not reverse)
  da = d * h_prev
  # Sum over the axes a was broadcast along (size 1 in a, e.g. time for a constant a).
  summed = tuple(i for i, (n_a, n_h) in enumerate(zip(a.shape, h.shape)) if n_a != n_h)
  da = jnp.sum(da, axis=summed, keepdims=True)
  dh0 = jnp.take(a, 0 if a.shape[axis] == 1 else first, axis) * jnp.take(d, first, axis)
  return da, d, dh0


_chunked_scan.defvjp(_chunked_scan_fwd, _chunked_scan_bwd)


def _chunked(a: Array, b: Array, h0: Array | None, reverse: bool, axis: int, *,
             chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """Chunked backend: a loop over ``T // chunk_size`` chunks (state carried across),
  updating the output buffer in place, with a custom VJP; see the module docstring."""
  state_shape = b.shape[:axis] + b.shape[axis + 1:]
  h0 = jnp.zeros(state_shape, b.dtype) if h0 is None else h0
  return _chunked_scan(a, b, h0, reverse, axis, chunk_size)


# Each backend gets a, b at full rank (a may have size 1 on `axis`), h0 already broadcast
# to the state shape or None for zeros, `reverse`, and a non-negative `axis`.
_BACKENDS: dict[str, Callable[[Array, Array, Array | None, bool, int], Array]] = {
    'sequential': _sequential,
    'associative': _associative,
    'chunked': _chunked,
}


def linear_scan(a: Array, b: Array, h0: Array | None = None, *, reverse: bool = False,
                backend: str = AUTO, axis: int = 1,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """All states of the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t``.

  With ``reverse=True`` the recurrence runs from the end: ``h_t = a_t * h_{t+1} + b_t``
  (the backward direction of a bidirectional SSM). The state before the first processed
  step is ``h0`` (zeros when ``None``).

  Args:
    a: decay, e.g. ``[batch, time, ...]``; broadcast against ``b`` (NumPy rules), so a
      time-invariant decay may be ``[...]`` or have size 1 on ``axis``.
    b: input, e.g. ``[batch, time, ...]``.
    h0: initial state, broadcastable to the broadcast shape of ``a``/``b`` without
      ``axis`` (e.g. ``[batch, ...]``).
    reverse: run from the last step to the first.
    backend: ``'auto'`` (default: the fastest measured for this platform and length,
      see :func:`select_backend`), ``'sequential'``, ``'associative'`` or ``'chunked'``.
      All compute the same function (tested to 1e-5).
    axis: time axis of the broadcast shape (negative values count from the end).
    chunk_size: steps per chunk of the ``'chunked'`` backend (positive; any ``T``).

  Returns:
    ``h`` with the broadcast shape of ``a`` and ``b`` (e.g. ``[batch, time, ...]``), where
    ``h[:, t]`` is the state after step ``t``. The final state is ``final_state(h)``, i.e.
    ``h[:, -1]`` (``h[:, 0]`` when ``reverse``).

  Raises:
    ValueError: unknown ``backend``, ``chunk_size < 1``, or ``a``/``b``/``h0`` shapes
      that do not broadcast.
  """
  if backend != AUTO and backend not in BACKENDS:
    raise ValueError(f'unknown scan backend {backend!r}; choose one of '
                     f'{", ".join(map(repr, BACKENDS + (AUTO,)))}')
  if not (isinstance(chunk_size, int) and chunk_size >= 1):
    raise ValueError(f'chunk_size={chunk_size!r} must be a positive integer')
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  shape = jnp.broadcast_shapes(a.shape, b.shape)
  axis = axis % len(shape)
  dtype = jnp.result_type(a, b) if h0 is None else jnp.result_type(a, b, h0)
  # Align a to the full rank (leading 1s) so `axis` means the same thing for a and b.
  a = a.astype(dtype).reshape((1,) * (len(shape) - a.ndim) + a.shape)
  b = jnp.broadcast_to(b.astype(dtype), shape)
  if h0 is not None:
    h0 = jnp.broadcast_to(jnp.asarray(h0, dtype), shape[:axis] + shape[axis + 1:])
  if backend == AUTO:
    backend = select_backend(jax.default_backend(), shape[axis])
  if backend == 'chunked':
    return _chunked(a, b, h0, reverse, axis, chunk_size=chunk_size)
  return _BACKENDS[backend](a, b, h0, reverse, axis)


def final_state(h: Array, *, reverse: bool = False, axis: int = 1) -> Array:
  """The last state of a ``linear_scan`` result: ``h[:, -1]`` (``h[:, 0]`` if reversed).

  Feed it back as ``h0`` to continue the recurrence on the next chunk of a sequence.
  """
  return jnp.take(h, 0 if reverse else h.shape[axis] - 1, axis=axis)
