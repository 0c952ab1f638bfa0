"""The positive linear recurrence ``h_t = a_t * h_{t-1} + b_t`` computed in log space.

Feng et al. 2024 ("Were RNNs All We Needed?", arXiv:2410.01201, sec. 3 and Appendix B)
train minGRU and minLSTM with the parallel scan of Heinsen 2023 ("Efficient Parallelization
of a Ubiquitous Sequential Computation"): for ``a_t in (0, 1]`` and ``b_t > 0`` the states
are, with ``a*_t = sum_{r<=t} log a_r``::

    log h_t = a*_t + logcumsumexp_t(log b_t - a*_t)          (h_0 = 0)

two cumulative reductions instead of a loop. Taken over the whole sequence, ``a*_t`` falls
without bound (by ``|log a|`` per step) and ``log h_t`` becomes the difference of two large
numbers: at T = 4096 and ``log a ~ -0.7`` about ``3000 * 6e-8 ~ 2e-4`` of float32 precision
would be lost. So :func:`log_space_scan` applies the formula within chunks of ``chunk``
steps and carries ``log h`` between chunks with a ``lax.scan``; within a chunk ``a*``
restarts at 0 and the carried state enters as one more term of the log-sum-exp::

    log h_t = a*_t + logaddexp(log h_start, logcumsumexp_{s<=t}(log b_s - a*_s))

The loop runs over ``T / chunk`` chunks (its program does not grow with ``T``) and every
chunk is parallel. Shapes: ``log_a``, ``log_b`` ``[batch, time, ...]``; result the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# log of "no input": exp(NEG_INF) is exactly 0 in float32, and unlike -inf it never makes
# inf - inf (NaN) in a log-sum-exp or its gradient.
NEG_INF = -1e30


def log_space_scan(log_a: Array, log_b: Array, log_h0: Array | None = None, *,
                   chunk: int = 64) -> Array:
  """``log h_t`` of ``h_t = a_t h_{t-1} + b_t`` over axis 1, by chunks (module doc).

  Args:
    log_a: ``[batch, time, ...]`` log decays (``<= 0`` keeps the state bounded; any real
      value is computed correctly).
    log_b: ``[batch, time, ...]`` log inputs; ``NEG_INF`` means no input (a padded
      token: with ``log_a = 0`` as well the state is carried unchanged).
    log_h0: ``[batch, ...]`` log of the state before the first step; ``None`` is
      ``h_0 = 0``.
    chunk: steps per chunk (any ``time``; the last chunk is padded with no-op steps).
      Smaller chunks are more precise (the error grows with the decay summed over a
      chunk) and take more loop iterations.

  Returns:
    ``log h`` ``[batch, time, ...]`` in float32 (or wider).
  """
  dtype = jnp.promote_types(jnp.promote_types(log_a.dtype, log_b.dtype), jnp.float32)
  log_a, log_b = log_a.astype(dtype), log_b.astype(dtype)
  batch, time = log_b.shape[:2]
  rest = log_b.shape[2:]
  # Always whole chunks (a short sequence is padded up): the cumulative reductions'
  # program depends on the chunk size only, never on the length.
  size = max(1, chunk)
  n = -(-time // size)
  pad = n * size - time
  if pad:
    widths = [(0, 0), (0, pad)] + [(0, 0)] * len(rest)
    log_a = jnp.pad(log_a, widths)
    log_b = jnp.pad(log_b, widths, constant_values=NEG_INF)
  # [n, batch, size, ...]: the loop walks the leading axis.
  to_chunks = lambda x: jnp.moveaxis(x.reshape(batch, n, size, *rest), 1, 0)
  if log_h0 is None:
    log_h0 = jnp.full((batch, *rest), NEG_INF, dtype)

  def chunk_step(log_h, ab):
    la, lb = ab
    a_star = jnp.cumsum(la, axis=1)
    inner = jax.lax.cumlogsumexp(lb - a_star, axis=1)
    out = a_star + jnp.logaddexp(log_h[:, None], inner)
    return out[:, -1], out

  _, out = jax.lax.scan(chunk_step, log_h0.astype(dtype), (to_chunks(log_a),
                                                           to_chunks(log_b)))
  out = jnp.moveaxis(out, 0, 1).reshape(batch, n * size, *rest)
  return out[:, :time]
