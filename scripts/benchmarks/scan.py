"""Linear-recurrence scan benchmark (issue 6, item 3): every ``linear_scan`` backend.

For each shape ``[B, T, D]`` (real float32 and complex64, the dtype S4D scans in), times
``h_t = a_t h_{t-1} + b_t`` with each backend and reports the bytes the scan must move
(read ``a`` and ``b``, write ``h``) per second, as a fraction of the bandwidth of an
elementwise ``a*b+c`` over the same number of elements measured in the same run
(the ``common.elementwise_bandwidth_gbs`` kernel, timed round-robin with the scans), and
``auto``'s time relative to the fastest backend. ``*_best`` fields use the minimum over
repeats instead of the median (less sensitive to other jobs on a shared machine).

A second peer, ``loop_elementwise``, bounds what any loop over time can do here: the
chunked backend's loop (``fori_loop``, one time step per iteration, in place into a buffer
that starts as ``b``) with the recurrence's dependence removed (``out_t = 2 a_t + out_t``:
same slices, same bytes, no carried state). ``frac_loop_bw`` is the scan's bandwidth as a
fraction of that loop's. On XLA:CPU the loop body runs on one core while ``a*b+c`` is
split over all of them, so ``frac_loop_bw`` near 1 with ``frac_elementwise_bw`` below it
says the time goes to the loop structure, not to the recurrence.
Plus one ``linear_scan_grad`` record per backend (except the associative scan) at
B=8, T=4096, D=256 float32: a gradient step (forward and backward pass) timed round-robin,
relative to ``sequential`` (autodiff of ``lax.scan``). The chunked backend's custom VJP
runs the backward pass as one more linear scan of the same size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.ops.scan import BACKENDS, linear_scan, select_backend
from seqjax.ops.switch import AUTO
from seqjax.utils.timing import time_interleaved

FULL_SHAPES = [(8, 4096, 256), (8, 4096, 16), (8, 4096, 1024), (8, 256, 16),
               (8, 256, 256), (8, 256, 1024)]
QUICK_SHAPES = [(8, 4096, 256), (8, 256, 256)]


def _inputs(shape: tuple[int, int, int], complex_: bool):
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.uniform(ka, shape, minval=0.5, maxval=1.0)
  b = jax.random.normal(kb, shape)
  if complex_:
    a = a * jnp.exp(0.1j).astype(jnp.complex64)
    b = b.astype(jnp.complex64)
  return a, b


def _loop_elementwise(a: jax.Array, b: jax.Array) -> jax.Array:
  """``out_t = 2 a_t + b_t`` through the chunked backend's loop structure (time axis 1)."""
  def body(t, out):
    step = (2 * jax.lax.dynamic_index_in_dim(a, t, 1, keepdims=False)
            + jax.lax.dynamic_index_in_dim(out, t, 1, keepdims=False))
    return jax.lax.dynamic_update_index_in_dim(out, step, t, 1)
  return jax.lax.fori_loop(0, b.shape[1], body, b)


def run(quick: bool = False) -> list[dict]:
  """One record per (shape, dtype, backend), plus ``auto_vs_fastest`` on every record."""
  shapes = QUICK_SHAPES if quick else FULL_SHAPES
  repeats = 5 if quick else 9
  backends = list(BACKENDS) + [AUTO]
  records = []
  for complex_ in (False, True):
    for shape in shapes:
      if quick and complex_ and shape != (8, 4096, 256):
        continue
      a, b = _inputs(shape, complex_)
      num = a.size * (2 if complex_ else 1)  # complex = two float32 per element
      x, y, z = (jnp.full((num,), v, jnp.float32) for v in (1.0, 0.5, 0.25))
      # Round-robin timing, the elementwise peer included: on a loaded machine only
      # interleaving keeps ratios honest ('auto' and the backend it resolves to are the
      # same program, so their ratio should read ~1).
      fns = {n: (jax.jit(functools.partial(linear_scan, backend=n)), (a, b))
             for n in backends}
      fns['_elementwise'] = (jax.jit(lambda x, y, z: x * y + z), (x, y, z))
      fns['_loop'] = (jax.jit(_loop_elementwise), (a, b))
      timings = time_interleaved(fns, repeats=repeats)
      elementwise = timings.pop('_elementwise')
      loop = timings.pop('_loop')
      nbytes = 3 * a.size * a.dtype.itemsize  # read a, b; write h
      for stat in ('median_ms', 'min_ms'):
        fastest = min(t[stat] for n, t in timings.items() if n != 'auto')
        for t in timings.values():
          t[f'vs_fastest_{stat[:-3]}'] = t[stat] / fastest
      bandwidth = 16 * num / (elementwise['median_ms'] * 1e-3) / 1e9
      bandwidth_best = 16 * num / (elementwise['min_ms'] * 1e-3) / 1e9
      loop_bandwidth = nbytes / (loop['median_ms'] * 1e-3) / 1e9
      for backend, t in timings.items():
        gbs = nbytes / (t['median_ms'] * 1e-3) / 1e9
        gbs_best = nbytes / (t['min_ms'] * 1e-3) / 1e9
        records.append({
            'bench': 'linear_scan', 'backend': backend, 'batch': shape[0],
            'time': shape[1], 'dim': shape[2], 'dtype': str(a.dtype),
            'auto_resolves_to': select_backend(jax.default_backend(), shape[1]),
            'median_ms': t['median_ms'], 'min_ms': t['min_ms'], 'gb_per_s': gbs,
            'elementwise_gb_per_s': bandwidth, 'frac_elementwise_bw': gbs / bandwidth,
            'frac_elementwise_bw_best': gbs_best / bandwidth_best,
            'loop_elementwise_ms': loop['median_ms'], 'frac_loop_bw': gbs / loop_bandwidth,
            'vs_fastest': t['vs_fastest_median'], 'vs_fastest_best': t['vs_fastest_min'],
            'auto_vs_fastest': timings['auto']['vs_fastest_median'],
            'auto_vs_fastest_best': timings['auto']['vs_fastest_min']})
  return records + _gradient_records(repeats)


def _gradient_records(repeats: int) -> list[dict]:
  """Forward + backward of ``sum(h * w)`` w.r.t. ``a`` and ``b`` per backend."""
  shape = QUICK_SHAPES[0]
  a, b = _inputs(shape, False)
  w = jnp.full(shape, 0.5, jnp.float32)
  fns = {}
  for backend in ('sequential', 'chunked', 'auto'):
    loss = lambda a, b, backend=backend: jnp.sum(linear_scan(a, b, backend=backend) * w)
    fns[backend] = (jax.jit(jax.grad(loss, argnums=(0, 1))), (a, b))
  timings = time_interleaved(fns, repeats=repeats)
  return [{'bench': 'linear_scan_grad', 'backend': backend, 'batch': shape[0],
           'time': shape[1], 'dim': shape[2], 'dtype': 'float32',
           'median_ms': t['median_ms'], 'min_ms': t['min_ms'],
           'vs_sequential': t['median_ms'] / timings['sequential']['median_ms']}
          for backend, t in timings.items()]


if __name__ == '__main__':
  common.run_standalone(run)
