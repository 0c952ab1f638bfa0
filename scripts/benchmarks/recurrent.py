"""The recurrent revival against chunked attention: training-step time per family and the
chunkwise cells against chunked attention (issue 13).

* ``train_step``: one mixer layer of each family (as ``seqjax.models.families`` builds it
  at ``d_model=128``, 4 heads, batch 1, float32, default implementations), the gradient of
  ``sum(mixer(x))`` with respect to the parameters and ``x``; the peer is the causal
  Transformer mixer with ``impl='attention:chunked'`` (blocks of 256), timed round-robin
  with the others at each length. Griffin's attention block is timed as
  ``griffin_local_mqa`` (window 1024, one key/value head); its recurrent block is ``hawk``.
  ``slstm_autodiff`` is the sLSTM with autodiff of its ``lax.scan`` (``impl='slstm:
  autodiff'``) beside ``slstm``, its default hand-written backward pass.
* ``cells``: the sequence mixing alone, forward + backward, ``[1, 4 heads, T, 32]``: causal
  chunked attention (blocks of 256), the mLSTM cell chunkwise (chunks of 64) and parallel
  (``[T, T]``), and the SSD chunked (chunks of 64, ``N = 64``; Mamba-2's ``x`` is
  ``[1, T, 4, 32]``) beside Mamba's fused selective scan at the same width (E = 128 channels,
  ``N = 16``, its default).

Each timed call follows an untimed call of the same function (``settle=1``), so no row
pays for the caches its predecessor in the round left behind. Lengths 256, 1024, 4096
(quick: 1024 only, no cells, and the train step of one family per kind:
``QUICK_MIXERS``; Mamba's block has its own benchmark). Records carry
``ratio_vs_attention`` (time / chunked attention's time at the same length, same rounds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES
from seqjax.ops import mlstm
from seqjax.ops.chunked_attention import chunked_attention
from seqjax.ops.selective_scan import selective_scan
from seqjax.ops.ssd import ssd_chunked
from seqjax.utils.timing import time_interleaved

D_MODEL, HEADS, HEAD_DIM = 128, 4, 32
MIXERS = ('transformer', 'min_gru', 'min_lstm', 'hawk', 'griffin_local_mqa', 'mlstm',
          'slstm', 'slstm_autodiff', 'mamba', 'mamba2')
# One per kind: attention, a diagonal linear recurrence (minGRU's log-space scan; Hawk's
# RG-LRU is the same kind), mLSTM, sLSTM, selective SSM (Mamba's train step is
# mamba_vs_transformer's).
QUICK_MIXERS = ('transformer', 'min_gru', 'mlstm', 'slstm', 'mamba2')


def _mixer(name: str):
  if name == 'transformer':
    cfg = ModelConfig(model='transformer', d_model=D_MODEL, num_heads=HEADS,
                      impl='attention:chunked', attention_chunk=256)
    return FAMILIES['transformer'].build(cfg, True, 0)
  if name == 'griffin_local_mqa':
    return FAMILIES['griffin'].build(ModelConfig(model='griffin', d_model=D_MODEL,
                                                 num_heads=HEADS), True, 1)
  if name == 'slstm_autodiff':
    return FAMILIES['slstm'].build(ModelConfig(model='slstm', d_model=D_MODEL,
                                               num_heads=HEADS, impl='slstm:autodiff'),
                                   True, 0)
  return FAMILIES[name].build(ModelConfig(model=name, d_model=D_MODEL, num_heads=HEADS),
                              True, 0)


def _train_step(name: str, time: int):
  mixer = _mixer(name)
  x = jax.random.normal(jax.random.key(0), (1, time, D_MODEL))
  params = jax.jit(mixer.init)(jax.random.key(1), x)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(mixer.apply(p, x)), argnums=(0, 1)))
  return grad, (params, x)


def _cells(time: int) -> dict:
  keys = jax.random.split(jax.random.key(0), 8)
  q, k, v = (jax.random.normal(keys[i], (1, HEADS, time, HEAD_DIM)) for i in range(3))
  gates = jax.random.normal(keys[3], (2, 1, HEADS, time))
  x = jax.random.normal(keys[4], (1, time, HEADS, HEAD_DIM))
  a = -jax.random.uniform(keys[5], (1, time, HEADS))
  b, c = jax.random.normal(keys[6], (2, 1, time, 64))
  e = HEADS * HEAD_DIM
  u, delta = jax.random.normal(keys[7], (2, 1, time, e))
  a_mamba = -jnp.ones((e, 16))
  b16, c16 = b[..., :16], c[..., :16]
  d = jnp.ones((e,))

  def fwd_bwd(f, *args):
    return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(len(args))))), args

  cases = {
      'chunked_attention': fwd_bwd(lambda q, k, v: chunked_attention(
          q, k, v, causal=True, block_q=256, block_k=256), q, k, v),
      'mlstm_chunkwise': fwd_bwd(lambda q, k, v, g: mlstm.chunkwise(q, k, v, g[0], g[1]),
                                 q, k, v, gates),
      'ssd_chunked': fwd_bwd(lambda x, a, b, c: ssd_chunked(x, a, b, c)[0], x, a, b, c),
      'mamba_selective_scan': fwd_bwd(lambda u, dl, b, c: selective_scan(
          u, jax.nn.softplus(dl), a_mamba, b, c, d), u, delta, b16, c16),
  }
  if time <= 1024:   # the [T, T] form; at 4096 its matrices alone are 1 GB per op
    cases['mlstm_parallel'] = fwd_bwd(lambda q, k, v, g: mlstm.parallel(
        q, k, v, g[0], g[1]), q, k, v, gates)
  return cases


def _records(kind: str, timings: dict, peer: str, time: int) -> list[dict]:
  base = timings[peer]['median_ms']
  return [{'bench': 'recurrent', 'kind': kind, 'name': name, 'time': time, 'batch': 1,
           **t, 'ratio_vs_attention': t['median_ms'] / base} for name, t in timings.items()]


def run(quick: bool = False) -> list[dict]:
  lengths = (1024,) if quick else (256, 1024, 4096)
  repeats = 3 if quick else 5
  records = []
  for time in lengths:
    if not quick:
      timings = time_interleaved(_cells(time), warmup=1, repeats=repeats, settle=1)
      records += _records('cells', timings, 'chunked_attention', time)
    mixers = QUICK_MIXERS if quick else MIXERS
    steps = {name: _train_step(name, time) for name in mixers}
    timings = time_interleaved(steps, warmup=1, repeats=repeats, settle=1)
    records += _records('train_step', timings, 'transformer', time)
  return records


if __name__ == '__main__':
  common.run_standalone(run)
