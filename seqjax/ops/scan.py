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

A backend is an enum member plus an entry in ``_BACKENDS``; a later ``'chunked'`` backend
or an ``'auto'`` choice (resolved in ``resolve_backend``, as recurrentgemma resolves
``ScanType.AUTO`` by platform) only has to add to those two places.

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
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


class ScanBackend(str, enum.Enum):
  """How ``linear_scan`` evaluates the recurrence (see the module docstring)."""

  SEQUENTIAL = 'sequential'
  ASSOCIATIVE = 'associative'


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


# Each backend gets a, b at full rank (a may have size 1 on `axis`), h0 already broadcast
# to the state shape or None for zeros, `reverse`, and a non-negative `axis`.
_BACKENDS: dict[ScanBackend,
                Callable[[Array, Array, Array | None, bool, int], Array]] = {
    ScanBackend.SEQUENTIAL: _sequential,
    ScanBackend.ASSOCIATIVE: _associative,
}


def linear_scan(a: Array, b: Array, h0: Array | None = None, *, reverse: bool = False,
                backend: str | ScanBackend = 'sequential', axis: int = 1) -> Array:
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
    backend: ``'sequential'`` or ``'associative'`` (or a ``ScanBackend``).
    axis: time axis of the broadcast shape (negative values count from the end).

  Returns:
    ``h`` with the broadcast shape of ``a`` and ``b`` (e.g. ``[batch, time, ...]``), where
    ``h[:, t]`` is the state after step ``t``. The final state is ``final_state(h)``, i.e.
    ``h[:, -1]`` (``h[:, 0]`` when ``reverse``).

  Raises:
    ValueError: unknown ``backend``, or ``a``/``b``/``h0`` shapes that do not broadcast.
  """
  impl = _BACKENDS[resolve_backend(backend)]
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
  return impl(a, b, h0, reverse, axis)


def final_state(h: Array, *, reverse: bool = False, axis: int = 1) -> Array:
  """The last state of a ``linear_scan`` result: ``h[:, -1]`` (``h[:, 0]`` if reversed).

  Feed it back as ``h0`` to continue the recurrence on the next chunk of a sequence.
  """
  return jnp.take(h, 0 if reverse else h.shape[axis] - 1, axis=axis)
