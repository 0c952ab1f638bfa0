"""Does a seeds x learning-rates sweep train faster as one ``jax.vmap``-ed program?

The comparison trains several members (seeds x rates) of one small model. Two ways to do
it with one compile: call one jitted train step once per member (``seqjax.training.sweep``
does this, the rate kept in the optimizer state), or stack the members and ``vmap`` the
step, so that each matmul becomes a batched matmul and one dispatch serves every member.
On an accelerator the second is the obvious choice; on a 2-core CPU a small model's step
may already be compute-bound, and the batching rules of the custom-VJP scans (LSTM,
Mamba) and of S4D's FFT convolution can make the vmapped program slower than the loop.

For each family this times, in the same process and round-robin (``time_interleaved``):
``members`` sequential calls of the jitted step, and one call of the vmapped step over the
same ``members`` states. The comparison's shape: 2 layers, ~40k parameters, batch 32,
64 tokens. ``speedup`` > 1 means the vmapped program is faster per member.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scripts.benchmarks import common
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model
from seqjax.models.sizing import match_d_model, param_count
from seqjax.training import optimizer as opt_lib
from seqjax.training.state import init_state
from seqjax.training.steps import make_train_step
from seqjax.utils.timing import time_interleaved

FAMILIES = ('lstm', 'transformer', 's4d', 'mamba')
BATCH, TIME, VOCAB, TARGET_PARAMS = 32, 64, 80, 40_000


def _optimizer():
  config = type('Config', (), dict(learning_rate=3e-3, warmup_steps=10, num_steps=1000,
                                   lr_schedule='cosine', min_lr_ratio=0.1, grad_clip=1.0,
                                   b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01))
  return opt_lib.make_tunable_optimizer(config)


def _batch(members: int | None):
  rng = np.random.default_rng(0)
  batch = {'inputs': rng.integers(4, VOCAB, (BATCH, TIME)).astype(np.int32),
           'targets': rng.integers(4, VOCAB, (BATCH, TIME)).astype(np.int32),
           'weights': np.ones((BATCH, TIME), np.float32),
           'mask': np.ones((BATCH, TIME), bool),
           'example_weight': np.ones(BATCH, np.float32)}
  if members is None:
    return batch
  return {k: np.broadcast_to(v, (members,) + v.shape).copy() for k, v in batch.items()}


def run(quick: bool = False) -> list[dict]:
  members = 3 if quick else 9
  families = ('lstm', 'mamba') if quick else FAMILIES
  records = []
  for family in families:
    cfg = match_d_model(ModelConfig(model=family, head='lm', vocab_size=VOCAB,
                                    num_layers=2, max_len=TIME), TARGET_PARAMS,
                        max_d_model=512)
    optimizer, unit = _optimizer()
    step = make_train_step(build_model(cfg), 'token', 0, optimizer, unit)
    single = jax.jit(step)
    stacked = jax.jit(jax.vmap(step))
    state = jax.jit(lambda: init_state(cfg, optimizer, 0))()
    states = jax.jit(jax.vmap(lambda s: init_state(cfg, optimizer, s)))(
        jnp.arange(members))

    def loop(state, batch):
      out = None
      for _ in range(members):
        out = single(state, batch)
      return out

    times = time_interleaved({'loop': (loop, (state, _batch(None))),
                              'vmap': (stacked, (states, _batch(members)))},
                             warmup=1, repeats=3 if quick else 5)
    loop_ms, vmap_ms = times['loop']['median_ms'], times['vmap']['median_ms']
    records.append({'bench': 'sweep_vmap', 'family': family, 'd_model': cfg.d_model,
                    'params': param_count(cfg), 'members': members, 'batch': BATCH,
                    'T': TIME, 'loop_ms_per_member': loop_ms / members,
                    'vmap_ms_per_member': vmap_ms / members,
                    'loop_cpu_ms_per_member': times['loop']['median_cpu_ms'] / members,
                    'vmap_cpu_ms_per_member': times['vmap']['median_cpu_ms'] / members,
                    'speedup': loop_ms / vmap_ms})
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=False)
