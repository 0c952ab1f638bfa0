"""Diagonal linear recurrences ``h_t = a_t * h_{t-1} + b_t`` behind one backend switch.

Every linear state-space layer (S4D, Mamba, LRU/Griffin-style RNNs) reduces its sequence
mixing to this elementwise recurrence, so it lives here once with interchangeable backends
(the design follows recurrentgemma's ``scan.py``/``ScanType``):

* ``'sequential'``: ``jax.lax.scan`` over time, O(T) depth, O(1) extra memory per step.
  Usually the fastest on CPU.
* ``'associative'``: ``jax.lax.associative_scan`` (Blelloch 1990) with the operator on
  pairs ``(a, b)`` that represent the affine map ``h -> a * h + b``::

      (a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)        # apply map 1, then map 2

  O(log T) depth and O(T) work (about twice the sequential flops, plus the ``a`` products),
  paying off on accelerators with long sequences (Smith et al. 2023, "Simplified State
  Space Layers", sec. 2.2; Gu & Dao 2023, sec. 3.3). Its compiled program has one block
  per recursion level, so it grows like log T (never like T).

* ``'chunked'``: a sequential loop over chunks of ``chunk_size`` steps (default 8) that
  carries the state across chunks; each iteration slices one chunk of ``a`` and ``b`` in
  place along ``axis`` (no transposes), advances all ``chunk_size`` steps in one fused
  elementwise kernel over ``[batch, chunk, ...]`` and writes the chunk into the output
  buffer. On CPU the per-iteration cost of ``lax.scan`` (several small thunks per step,
  plus moving time to the leading axis and back) dominates a memory-bound recurrence;
  chunking amortises it over ``chunk_size`` steps and keeps the bytes moved at the
  minimum (read ``a``, ``b``; write ``h``). A remainder ``T % chunk_size`` is handled by
  a short unrolled tail, so any ``T`` works without padding copies. The within-chunk
  steps are unrolled up to ``chunk_size`` (a constant: the compiled program does not
  grow with ``T``). An associative scan *within* the chunk measured slower on CPU
  (chunk 64: 85-92 ms vs 52-58 ms for the unrolled chunk of 8, B=8, T=4096, D=256).
* ``'auto'``: picks one of the above per platform (``jax.default_backend()``) and shape
  in :func:`select_backend`, from the measurements recorded there.

A backend is an enum member plus an entry in ``_BACKENDS``.

Broadcasting: ``a`` and ``b`` are broadcast against each other with NumPy rules (aligned
from the right); ``axis`` indexes the broadcast shape. So a time-invariant ``a`` can be
passed as ``[d, n]`` (or ``[1, 1, d, n]``) next to ``b`` ``[batch, time, d, n]``; the
sequential backend then keeps it out of the scanned inputs instead of materialising it T
times. ``h0`` is broadcast against the per-step state shape (the broadcast shape without
``axis``). Real and complex dtypes are both supported; the result dtype is the common
dtype of ``a``, ``b`` and ``h0``.
"""

from __future__ import annotations

import enum
import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


class ScanBackend(str, enum.Enum):
  """How ``linear_scan`` evaluates the recurrence (see the module docstring)."""

  SEQUENTIAL = 'sequential'
  ASSOCIATIVE = 'associative'
  CHUNKED = 'chunked'
  AUTO = 'auto'


DEFAULT_CHUNK_SIZE = 8


def select_backend(platform: str, time: int, size: int) -> ScanBackend:
  """The concrete backend ``'auto'`` uses on ``platform`` for a scan of ``time`` steps
  over ``size`` elements in total (the broadcast shape's size).

  CPU: ``'chunked'``, except tiny scans (``size < 2**17``, e.g. B=8, T=256, D=16), where
  the chunk bookkeeping costs more than it saves and ``'sequential'`` won (0.05 vs
  0.08 ms float32, 0.11 vs 0.17 ms complex64; ``scripts/benchmarks/scan.py``, same run).
  Best-of-5 ms on the shared 2-core CPU
  (2026-11-23, machine under load from other jobs, so ratios, not absolute values,
  matter), float32 unless noted, B=8:

  ===================  ==========  ===========  =========  =========  ==========
  T, D                 sequential  associative  chunked 4  chunked 8  chunked 16
  ===================  ==========  ===========  =========  =========  ==========
  4096, 256            151-160     306-347      50-84      73-81      92-120
  4096, 16             1.6-1.7     8.0-9.2      1.0-1.3    1.0-1.3    2.7-3.1
  4096, 1024           421-629     910-1167     150-283    245-251    381-660
  256, 256             1.0-1.2     2.2-4.1      0.9-1.5    0.7-1.1    2.4-2.6
  4096, 256 complex64  295-320     660-712      143-167    110-132    240-259
  ===================  ==========  ===========  =========  =========  ==========

  (``scripts/benchmarks/scan.py`` re-measures this table.) Other platforms were not
  measured here: on GPU/TPU the associative scan's O(log T) depth is the usual choice
  for long sequences (Smith et al. 2023; recurrentgemma resolves its AUTO scan the same
  way), and a short scan stays sequential.
  """
  if platform == 'cpu':
    return ScanBackend.SEQUENTIAL if size < 2 ** 17 else ScanBackend.CHUNKED
  return ScanBackend.ASSOCIATIVE if time >= 256 else ScanBackend.SEQUENTIAL


def resolve_backend(backend: str | ScanBackend) -> ScanBackend:
  """Validates a backend name (str or enum) and returns the enum member.

  Raises:
    ValueError: ``backend`` is not one of the registered names.
  """
  try:
    return ScanBackend(backend)
  except ValueError:
    choices = ', '.join(repr(b.value) for b in ScanBackend)
    raise ValueError(
        f'unknown scan backend {backend!r}; choose one of {choices}') from None


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


def _chunked(a: Array, b: Array, h0: Array | None, reverse: bool, axis: int, *,
             chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """Chunked backend: a loop over ``T // chunk_size`` chunks (state carried across),
  each chunk's steps fused into one elementwise kernel; see the module docstring."""
  time = b.shape[axis]
  state_shape = b.shape[:axis] + b.shape[axis + 1:]
  h = jnp.zeros(state_shape, b.dtype) if h0 is None else h0
  a_const = a.shape[axis] == 1
  if a_const:
    a_c = jnp.broadcast_to(jnp.squeeze(a, axis), state_shape)

  def run(h, start, length):
    """``length`` (static) steps from ``start``: returns the new state and the chunk's
    states stacked on ``axis``."""
    bc = jax.lax.dynamic_slice_in_dim(b, start, length, axis)
    ac = None if a_const else jax.lax.dynamic_slice_in_dim(a, start, length, axis)
    hs = [None] * length
    for j in (reversed(range(length)) if reverse else range(length)):
      a_j = a_c if a_const else jax.lax.index_in_dim(ac, j, axis, keepdims=False)
      h = a_j * h + jax.lax.index_in_dim(bc, j, axis, keepdims=False)
      hs[j] = h
    return h, jnp.stack(hs, axis)

  num_chunks, tail = divmod(time, chunk_size)
  out = jnp.zeros(b.shape, b.dtype)
  body_start = 0  # the full chunks cover [0, num_chunks * chunk_size)
  if tail and reverse:
    # The reverse pass meets the tail (the last positions) first.
    h, hs = run(h, num_chunks * chunk_size, tail)
    out = jax.lax.dynamic_update_slice_in_dim(out, hs, num_chunks * chunk_size, axis)

  def body(n, carry):
    h, out = carry
    start = body_start + (num_chunks - 1 - n if reverse else n) * chunk_size
    h, hs = run(h, start, chunk_size)
    return h, jax.lax.dynamic_update_slice_in_dim(out, hs, start, axis)

  if num_chunks:
    h, out = jax.lax.fori_loop(0, num_chunks, body, (h, out))
  if tail and not reverse:
    _, hs = run(h, num_chunks * chunk_size, tail)
    out = jax.lax.dynamic_update_slice_in_dim(out, hs, num_chunks * chunk_size, axis)
  return out


# Each backend gets a, b at full rank (a may have size 1 on `axis`), h0 already broadcast
# to the state shape or None for zeros, `reverse`, and a non-negative `axis`.
_BACKENDS: dict[ScanBackend,
                Callable[[Array, Array, Array | None, bool, int], Array]] = {
    ScanBackend.SEQUENTIAL: _sequential,
    ScanBackend.ASSOCIATIVE: _associative,
    ScanBackend.CHUNKED: _chunked,
}


def linear_scan(a: Array, b: Array, h0: Array | None = None, *, reverse: bool = False,
                backend: str | ScanBackend = 'auto', axis: int = 1,
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
    backend: ``'auto'`` (default: the fastest measured for this platform and shape,
      see :func:`select_backend`), ``'sequential'``, ``'associative'`` or ``'chunked'``
      (or a ``ScanBackend``). All compute the same function (tested to 1e-5).
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
  backend = resolve_backend(backend)
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
  if backend == ScanBackend.AUTO:
    backend = select_backend(jax.default_backend(), shape[axis], math.prod(shape))
  if backend == ScanBackend.CHUNKED:
    return _chunked(a, b, h0, reverse, axis, chunk_size=chunk_size)
  return _BACKENDS[backend](a, b, h0, reverse, axis)


def final_state(h: Array, *, reverse: bool = False, axis: int = 1) -> Array:
  """The last state of a ``linear_scan`` result: ``h[:, -1]`` (``h[:, 0]`` if reversed).

  Feed it back as ``h0`` to continue the recurrence on the next chunk of a sequence.
  """
  return jnp.take(h, 0 if reverse else h.shape[axis] - 1, axis=axis)
