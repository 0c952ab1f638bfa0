"""Attention training-step benchmark: chunked vs exact vs ``jax.nn`` (issue 6, item 2).

One step = causal self-attention forward + gradients w.r.t. ``q``, ``k``, ``v`` of
``sum(out * w)``, batch 1 × 8 heads × head dim 64, float32, at T = 1K, 4K, 8K (quick: 1K,
4K). Variants, each fed its native layout:

* ``jax_nn``: ``jax.nn.dot_product_attention(is_causal=True)`` (XLA, ``[B, T, H, D]``);
* ``seqjax_exact``: ``seqjax.ops.attention.attend(impl='exact')`` (``[B, H, T, D]``);
* ``seqjax_chunked``: ``attend(impl='chunked')``, online softmax over 512-blocks with a
  custom VJP and causal block skipping (``seqjax.ops.chunked_attention``).

Reported per variant and length: median ms, compile-time temporary memory
(``memory_analysis().temp_size_in_bytes``), and the ratios against ``jax_nn`` measured in
the same run. Target (T=4096): chunked temp memory <= 1/16 of ``jax_nn``'s and no slower.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.ops.attention import attend
from seqjax.utils.timing import compile_with_stats, time_fn

HEADS, HEAD_DIM, BATCH, CHUNK = 8, 64, 1, 512


def _loss_fns() -> dict[str, tuple[Callable, bool]]:
  """name -> (loss(q, k, v, w), wants [B, T, H, D] layout)."""
  def jax_nn(q, k, v, w):
    return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True) * w)

  def seqjax(impl):
    def loss(q, k, v, w):
      return jnp.sum(attend(q, k, v, causal=True, impl=impl, chunk_size=CHUNK) * w)
    return loss

  return {'jax_nn': (jax_nn, True), 'seqjax_exact': (seqjax('exact'), False),
          'seqjax_chunked': (seqjax('chunked'), False)}


def _inputs(t: int, btHd: bool):
  keys = jax.random.split(jax.random.PRNGKey(t), 4)
  shape = (BATCH, t, HEADS, HEAD_DIM) if btHd else (BATCH, HEADS, t, HEAD_DIM)
  return tuple(jax.random.normal(kk, shape, jnp.float32) for kk in keys)


def _max_error(t: int) -> dict:
  """Chunked vs exact outputs and gradients at length ``t`` (sanity check in the run)."""
  fns = _loss_fns()
  args = _inputs(t, False)
  grads = {name: jax.jit(jax.value_and_grad(fns[name][0], (0, 1, 2)))(*args)
           for name in ('seqjax_exact', 'seqjax_chunked')}
  (_, g_e), (_, g_c) = grads['seqjax_exact'], grads['seqjax_chunked']
  out_e = attend(*args[:3], causal=True, impl='exact')
  out_c = jax.jit(lambda q, k, v: attend(q, k, v, causal=True, impl='chunked',
                                         chunk_size=CHUNK))(*args[:3])
  return {'max_abs_err_out': float(jnp.max(jnp.abs(out_e - out_c))),
          'max_abs_err_grad': max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_e, g_c))}


def run(quick: bool = False) -> list[dict]:
  lengths = (1024, 4096) if quick else (1024, 4096, 8192)
  records = []
  err = _max_error(1024)
  records.append({'bench': 'attention', 'variant': 'chunked_vs_exact', 'T': 1024, **err,
                  'meets_1e-5': err['max_abs_err_out'] <= 1e-5 and
                                err['max_abs_err_grad'] <= 1e-5})
  for t in lengths:
    by_name = {}
    for name, (loss, btHd) in _loss_fns().items():
      args = _inputs(t, btHd)
      step = jax.grad(loss, (0, 1, 2))
      compiled, stats = compile_with_stats(step, *args)
      rec = {'bench': 'attention', 'variant': name, 'T': t, 'batch': BATCH,
             'heads': HEADS, 'head_dim': HEAD_DIM, **stats}
      # The quadratic paths take seconds per step at long T: fewer repeats there.
      # seqjax_exact is jax_nn's algorithm; past 4K (2K in quick mode) it is compiled for
      # its memory figure but not timed, to keep the run short and its peak memory sane.
      slow = name != 'seqjax_chunked' and t >= 4096
      if not (name == 'seqjax_exact' and t > (2048 if quick else 4096)):
        repeats = (1 if quick else 3 if t <= 4096 else 2) if slow else (3 if quick else 5)
        timing = time_fn(compiled, *args, warmup=1, repeats=repeats)
        rec.update(timing, tokens_per_s=BATCH * t / (timing['median_ms'] * 1e-3))
      by_name[name] = rec
    ref = by_name['jax_nn']
    for rec in by_name.values():
      if 'temp_bytes' in rec and ref.get('temp_bytes'):
        rec['temp_mem_vs_jax_nn'] = rec['temp_bytes'] / ref['temp_bytes']
      if 'median_ms' in rec and 'median_ms' in ref:
        rec['speedup_vs_jax_nn'] = ref['median_ms'] / rec['median_ms']
    chunked = by_name['seqjax_chunked']
    if t == 4096:
      chunked['target'] = 'temp memory <= 1/16 of jax_nn and no slower (T=4096)'
      chunked['target_met'] = bool(chunked.get('temp_mem_vs_jax_nn', 1) <= 1 / 16 and
                                   chunked.get('speedup_vs_jax_nn', 0) >= 1.0)
    records.extend(by_name.values())
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=True)
