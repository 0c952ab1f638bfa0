"""Mamba block vs Transformer block: where the crossover is (issue 6, item 4).

One seqjax ``ResidualBlock`` per family at matched width (``d_model=256``, the same
pre-norm + MLP (4·d) wrapper; only the mixer differs, as in the comparison backbone):

* ``mamba``: ``Mamba(256, mamba_d_state=16, mamba_expand=2)`` with its default fused
  selective scan (``seqjax.ops.selective_scan``, ``impl='selective_scan:fused'``);
* ``mamba_materialized``: the same block with the reference path
  (``impl='selective_scan:materialized'``: ``[batch, time, 2d, 16]`` arrays through
  ``linear_scan`` with the ``auto`` scan backend);
* ``transformer_chunked``: causal ``MultiHeadAttention(256, 4 heads)`` with the
  memory-efficient chunked path (512-blocks), the sensible choice for long inputs;
* ``transformer_exact``: the same with exact O(T²) attention (up to T=4096).

One step = forward + gradients w.r.t. params and input of ``sum(block(x) * w)``, batch 1,
float32, T = 256 .. 8192 (quick: 256 and 2K, fused Mamba and chunked attention only:
the two reference variants are design measurements). At each T the
variants are timed round-robin in one process (``seqjax.utils.timing.time_interleaved``),
so their ratios hold on a loaded machine, each timed call right after an untimed call of
the same variant (``settle=1``: the materialised Mamba block's large arrays would
otherwise evict the next variant's working set and slow it down). Reported: median ms,
tokens/s, temp memory, and a summary record with each T's fused/materialised Mamba time
ratio, the crossover lengths (the smallest measured T from which a Mamba variant stays
faster than each Transformer variant) and each variant's growth of the cost per token
from the shortest to the longest T. Each record carries the minor page faults of a step
(``median_page_faults``) and the summary the run's ``--host_memory`` policy: under the C
library's defaults the long steps fault their buffers in afresh every time
(``seqjax/utils/host_memory.py``).

The lengths are measured one after the other, so a cost per token compared across them
also compares the machine at different moments: on the 2-core VM the benchmarks run on,
every kernel ran 1.3-2x slower for stretches of 10-30 s with nothing else running
(BENCHMARKS.md, "Mamba after issue 16, round 7"). ``reference`` is a fixed amount of work
timed in every round at every T (the block's MLP branch, forward and backward, at 256
tokens); ``*_per_token_growth_vs_reference`` is the growth with each length's time
divided by the reference's time in the same rounds, which cancels a slowdown that hits
both alike. The raw growth is reported next to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.layers.attention import MultiHeadAttention
from seqjax.layers.block import ResidualBlock
from seqjax.layers.mamba import Mamba
from seqjax.ops.scan import SCAN
from seqjax.ops.switch import AUTO
from seqjax.utils import host_memory
from seqjax.utils.timing import compile_with_stats, time_interleaved

D_MODEL, HEADS, BATCH = 256, 4, 1


def _blocks() -> dict[str, ResidualBlock]:
  mixers = {
      'mamba': Mamba(D_MODEL, mamba_d_state=16, mamba_expand=2,
                     impl='selective_scan:fused'),
      'mamba_materialized': Mamba(D_MODEL, mamba_d_state=16, mamba_expand=2,
                                  impl='selective_scan:materialized'),
      'transformer_chunked': MultiHeadAttention(D_MODEL, HEADS, causal=True,
                                                impl='attention:chunked',
                                                attention_chunk=512),
      'transformer_exact': MultiHeadAttention(D_MODEL, HEADS, causal=True,
                                              impl='attention:exact'),
  }
  return {name: ResidualBlock(mixer, D_MODEL, 4 * D_MODEL) for name, mixer in mixers.items()}


def _reference_step():
  """``(jitted fn, args)``: the MLP branch's matmuls (256 -> 1024 -> 256, GELU) on 256
  tokens, forward and backward: the same work at every T, timed as the machine's pace."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(k1, (256, D_MODEL), jnp.float32)
  w_up = jax.random.normal(k2, (D_MODEL, 4 * D_MODEL), jnp.float32) * D_MODEL ** -0.5
  w_down = jax.random.normal(k3, (4 * D_MODEL, D_MODEL), jnp.float32) * (4 * D_MODEL) ** -0.5

  def loss(w_up, w_down, x):
    return jnp.sum(jax.nn.gelu(x @ w_up) @ w_down)

  return jax.jit(jax.grad(loss, (0, 1, 2))), (w_up, w_down, x)


def _crossover(rows: list[dict], fast: str, slow: str) -> int | None:
  """Smallest T from which ``fast`` is faster than ``slow`` at every longer measured T."""
  ms = {(r['variant'], r['T']): r['median_ms'] for r in rows if 'median_ms' in r}
  lengths = sorted({t for (v, t) in ms if v == slow and (fast, t) in ms})
  found = None
  for t in reversed(lengths):
    if ms[(fast, t)] < ms[(slow, t)]:
      found = t
    else:
      break
  return found


def run(quick: bool = False) -> list[dict]:
  lengths = (256, 2048) if quick else (256, 512, 1024, 2048, 4096, 8192)
  steps = {}
  for name, block in _blocks().items():
    if quick and name in ('transformer_exact', 'mamba_materialized'):
      continue  # the headline pair only (keeps `bench --quick` under 3 minutes)
    # Jitted: eager initialisation compiles every op on its own (7.8 s for Mamba's block).
    params = jax.jit(block.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, D_MODEL)))['params']

    def loss(p, x, w, block=block):
      return jnp.sum(block.apply({'params': p}, x) * w)

    steps[name] = (jax.grad(loss, (0, 1)), params)
  records, ratios, reference_ms = [], {}, {}
  reference = _reference_step()
  for t in lengths:
    kx, kw = jax.random.split(jax.random.PRNGKey(t))
    x = jax.random.normal(kx, (BATCH, t, D_MODEL), jnp.float32)
    w = jax.random.normal(kw, (BATCH, t, D_MODEL), jnp.float32)
    fns, stats = {}, {}
    for name, (step, params) in steps.items():
      if name == 'transformer_exact' and t > 4096:
        continue  # O(T²): ~1 GiB of weights per layer at 8K
      compiled, stats[name] = compile_with_stats(step, params, x, w)
      fns[name] = (compiled, (params, x, w))
    fns['reference'] = reference
    timings = time_interleaved(fns, warmup=1, settle=1,
                               repeats=2 if quick else 5)
    reference_ms[t] = timings.pop('reference')['median_ms']
    for name, timing in timings.items():
      params = steps[name][1]
      records.append({'bench': 'mamba_vs_transformer', 'variant': name, 'T': t,
                      'batch': BATCH, 'd_model': D_MODEL, 'reference_ms': reference_ms[t],
                      'params': sum(v.size for v in jax.tree_util.tree_leaves(params)),
                      **stats[name], **timing,
                      'tokens_per_s': BATCH * t / (timing['median_ms'] * 1e-3)})
    if 'mamba_materialized' in timings:
      ratios[t] = timings['mamba']['median_ms'] / timings['mamba_materialized']['median_ms']
  summary = {'bench': 'mamba_vs_transformer', 'variant': 'summary',
             'host_memory': host_memory.in_effect(),
             'mamba_materialized_scan_backend': SCAN.resolve(AUTO, max(lengths)),
             'lengths': list(lengths),
             'reference_ms': {str(t): ms for t, ms in reference_ms.items()},
             'fused_over_materialized_ms': {str(t): r for t, r in ratios.items()}}
  for name in steps:
    # Cost per token at the longest length this variant ran over that at the shortest
    # (1.0 = flat in length; issue 16 asks <= 1.15 for the fused Mamba block).
    per_token = {r['T']: r['median_ms'] / r['T'] for r in records if r['variant'] == name}
    longest, shortest = max(per_token), min(per_token)
    summary[f'{name}_per_token_growth'] = per_token[longest] / per_token[shortest]
    paced = {t: per_token[t] / reference_ms[t] for t in (longest, shortest)}
    summary[f'{name}_per_token_growth_vs_reference'] = paced[longest] / paced[shortest]
  for mamba in ('mamba', 'mamba_materialized'):
    for other in ('transformer_chunked', 'transformer_exact'):
      summary[f'{mamba}_faster_than_{other}_from_T'] = _crossover(records, mamba, other)
      summary[f'{other}_faster_than_{mamba}_from_T'] = _crossover(records, other, mamba)
  records.append(summary)
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=True)
