"""State-space duality (SSD): the scalar-times-identity selective SSM of Mamba-2 (Dao & Gu
2024, "Transformers are SSMs", arXiv:2405.21060), chunked form and recurrent step.

Per head, with ``A_t = exp(a_t)`` a scalar (``a_t = dt_t * A <= 0``), state ``h``
``[head_dim P, d_state N]`` (sec. 3 and 6, eq. 1 with ``A_t = a_t I``)::

    h_t = exp(a_t) h_{t-1} + x_t B_t^T            x_t [P] (already times dt_t), B_t [N]
    y_t = h_t C_t                                  [P]

Unrolled it is the masked "attention" ``y = (L o C B^T) x`` with the 1-semiseparable
``L_ts = exp(a_{s+1} + ... + a_t)`` for ``s <= t`` (sec. 4, eq. 16). The chunked algorithm
(sec. 6, Listing 1 = the authors' ``ssd_minimal_discrete``) cuts time into chunks of ``Q``
steps: inside a chunk the quadratic form (matmuls), between chunks the recurrence on the
state (here a ``lax.scan`` over chunks carrying ``h``, so the program does not grow with
``T``); each chunk's output adds the carried state read out through ``C`` with the decay
since the chunk start. ``O(T Q)`` work in matmuls plus ``O(T / Q)`` sequential steps.

Shapes: ``x`` ``[batch, time, heads, P]``, ``a`` ``[batch, time, heads]``, ``b`` and
``c`` ``[batch, time, N]`` (one group shared by all heads); ``y`` like ``x``. Computed in
float32 or wider. A step with ``a = 0`` and ``x = 0`` (a padded token) leaves ``h`` as it is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

NEG_INF = -1e30


def ssd_chunked(x: Array, a: Array, b: Array, c: Array, h0: Array | None = None, *,
                chunk: int = 64) -> tuple[Array, Array]:
  """All outputs and the final state (module doc).

  Args:
    x: ``[batch, time, heads, P]`` inputs (times ``dt``).
    a: ``[batch, time, heads]`` log decays (``dt * A``, ``<= 0``).
    b, c: ``[batch, time, N]``.
    h0: ``[batch, heads, P, N]`` initial state (zeros when ``None``).
    chunk: steps per chunk ``Q`` (``min(chunk, time)``; the last chunk is padded with
      no-op steps). The result does not depend on it.

  Returns:
    ``(y [batch, time, heads, P], h [batch, heads, P, N])``.
  """
  batch, time, heads, p = x.shape
  n_state = b.shape[-1]
  size = max(1, min(chunk, time))
  n = -(-time // size)
  pad = n * size - time
  if pad:
    zeros = lambda v: jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
    x, a, b, c = zeros(x), zeros(a), zeros(b), zeros(c)
  # [n, batch, Q, ...]: the loop walks the leading axis.
  split = lambda v: jnp.moveaxis(v.reshape(batch, n, size, *v.shape[2:]), 1, 0)
  causal = jnp.tril(jnp.ones((size, size), bool))
  if h0 is None:
    h0 = jnp.zeros((batch, heads, p, n_state), x.dtype)

  def one_chunk(h, inputs):
    xc, ac, bc, cc = inputs
    cum = jnp.cumsum(ac, axis=1)                                        # [b, Q, h]
    # L_ts = exp(cum_t - cum_s) for s <= t; masked before exp (later s would overflow).
    seg = cum[:, :, None, :] - cum[:, None, :, :]                       # [b, t, s, h]
    decay = jnp.exp(jnp.where(causal[None, :, :, None], seg, NEG_INF))
    scores = jnp.einsum('btn,bsn->bts', cc, bc)[..., None] * decay       # [b, t, s, h]
    y = jnp.einsum('btsh,bshp->bthp', scores, xc)
    # The carried state, decayed from the chunk start to t, read through C_t.
    y = y + jnp.einsum('btn,bhpn->bthp', cc, h) * jnp.exp(cum)[..., None]
    to_end = jnp.exp(cum[:, -1:] - cum)                                 # [b, Q, h]
    h = (jnp.exp(cum[:, -1])[..., None, None] * h
         + jnp.einsum('bsh,bshp,bsn->bhpn', to_end, xc, bc))
    return h, y

  h, y = jax.lax.scan(one_chunk, h0, tuple(split(v) for v in (x, a, b, c)))
  y = jnp.moveaxis(y, 0, 1).reshape(batch, n * size, heads, p)
  return y[:, :time], h


def ssd_step(h: Array, x: Array, a: Array, b: Array, c: Array) -> tuple[Array, Array]:
  """One step: ``h`` ``[batch, heads, P, N]``, ``x`` ``[batch, heads, P]``, ``a``
  ``[batch, heads]``, ``b, c`` ``[batch, N]`` -> ``(h, y [batch, heads, P])``."""
  h = jnp.exp(a)[..., None, None] * h + x[..., :, None] * b[:, None, None, :]
  return h, jnp.einsum('bhpn,bn->bhp', h, c)
