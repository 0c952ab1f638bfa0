"""Mamba's selective scan alone (issue 16, item 1): the fused scan's forward and
gradient at the shapes that matter to seqjax, against the materialised reference.

Shapes ``(B, T, E, N)``:

* the issue's block (``d_model=256``, expand 2, batch 1): ``E=512, N=16``,
  ``T = 256, 2048, 8192`` (quick: 256, 2048);
* the comparison suite's trained models (batch 32, ``d_model`` 32 and 64, so ``E`` 64
  and 128): ``T = 40`` and ``136``.

Variants, timed round-robin in one process (``seqjax.utils.timing.time_interleaved``):
``fused_fwd`` (``selective_scan``), ``fused_grad`` (``jax.grad`` of ``sum(y * w)``
w.r.t. ``u, delta, A, B, C, D``) and ``materialized_grad`` (the same through
``selective_scan_reference``, skipped above 2048 tokens: ``[B, T, E, N]`` arrays of
256 MiB). Each record gives the median and min ms, ``ns_per_state_step`` (time per
element of the ``[B, E, N]`` state per time step: flat in ``T`` means cost per token
flat in length) and ``fused_grad / materialized_grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.ops.selective_scan import selective_scan, selective_scan_reference
from seqjax.utils.timing import time_interleaved

ISSUE_SHAPES = [(1, 256, 512, 16), (1, 2048, 512, 16), (1, 8192, 512, 16)]
COMPARISON_SHAPES = [(32, 40, 64, 16), (32, 136, 64, 16), (32, 40, 128, 16),
                     (32, 136, 128, 16)]
MATERIALIZED_MAX_T = 2048


def _inputs(b: int, t: int, e: int, n: int):
  """Inputs in Mamba's ranges (``delta = softplus(.) > 0``, ``A < 0``) and a cotangent."""
  keys = jax.random.split(jax.random.PRNGKey(t * 7 + e), 7)
  u = jax.random.normal(keys[0], (b, t, e))
  delta = jax.nn.softplus(jax.random.normal(keys[1], (b, t, e)) - 1.0)
  a = -jnp.exp(0.5 * jax.random.normal(keys[2], (e, n)))
  bm = jax.random.normal(keys[3], (b, t, n))
  cm = jax.random.normal(keys[4], (b, t, n))
  d = jax.random.normal(keys[5], (e,))
  w = jax.random.normal(keys[6], (b, t, e))
  return (u, delta, a, bm, cm, d), w


def _grad(scan):
  def loss(u, delta, a, b, c, d, w):
    return jnp.sum(scan(u, delta, a, b, c, d) * w)
  return jax.jit(jax.grad(loss, argnums=tuple(range(6))))


def run(quick: bool = False) -> list[dict]:
  shapes = ISSUE_SHAPES[:2] + COMPARISON_SHAPES[-1:] if quick else (
      ISSUE_SHAPES + COMPARISON_SHAPES)
  fwd, fused_grad, ref_grad = (jax.jit(selective_scan), _grad(selective_scan),
                               _grad(selective_scan_reference))
  records = []
  for (b, t, e, n) in shapes:
    args, w = _inputs(b, t, e, n)
    fns = {'fused_fwd': (fwd, args), 'fused_grad': (fused_grad, args + (w,))}
    if t <= MATERIALIZED_MAX_T:
      fns['materialized_grad'] = (ref_grad, args + (w,))
    timings = time_interleaved(fns, warmup=1, repeats=3 if quick else 5)
    for name, timing in timings.items():
      record = {'bench': 'selective_scan', 'variant': name, 'batch': b, 'T': t, 'E': e,
                'N': n, **timing,
                'ms_per_token': timing['median_ms'] / (b * t),
                'ns_per_state_step': timing['median_ms'] * 1e6 / (b * t * e * n)}
      if name == 'fused_grad' and 'materialized_grad' in timings:
        record['over_materialized'] = (timing['median_ms']
                                       / timings['materialized_grad']['median_ms'])
      records.append(record)
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=True)
