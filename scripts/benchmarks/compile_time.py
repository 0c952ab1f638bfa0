"""Compile time of a full train step at T=256 vs T=4096, per family (issue 6, item 6).

A train step is what ``experiments/train.py`` jits: a seqjax ``CausalLM`` (``d_model=128``,
2 layers, vocab 256, batch 2), next-token cross-entropy, gradients, and an Adam update
(optax). Every time loop is a ``lax.scan`` (or a blocked loop for chunked attention), so
the program and its compile time should not grow with T: target ratio <= 1.5.

Each compile starts from ``jax.clear_caches()`` and lowers from abstract shapes
(``jax.ShapeDtypeStruct``), so no array is allocated and no tracing is reused; the long
length is compiled first so any one-time warm-up cost lands on it (a conservative ratio).
Also reported: the size of the lowered StableHLO text (equal sizes = nothing unrolled).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from scripts.benchmarks import common
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model

VARIANTS = {
    'lstm': {'model': 'lstm'},
    'gru': {'model': 'gru'},
    # Named: ``auto`` would compile exact attention at 256 tokens and chunked at 4096 on CPU.
    'transformer': {'model': 'transformer', 'impl': 'attention:exact'},
    'transformer_chunked': {'model': 'transformer', 'impl': 'attention:chunked'},
    's4d': {'model': 's4d'},
    'mamba': {'model': 'mamba'},
}
SHORT, LONG, BATCH = 256, 4096, 2


def _train_step(cfg: ModelConfig):
  model = build_model(cfg)
  opt = optax.adam(1e-3)

  def loss_fn(params, tokens):
    logits = model.apply({'params': params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  def step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.ones((1, 8), jnp.int32))['params'])
  opt_state = jax.eval_shape(opt.init, params)
  return step, params, opt_state


def _compile_seconds(cfg: ModelConfig, time_: int) -> dict:
  jax.clear_caches()
  step, params, opt_state = _train_step(cfg)
  tokens = jax.ShapeDtypeStruct((BATCH, time_ + 1), jnp.int32)
  start = time.perf_counter()
  lowered = jax.jit(step).lower(params, opt_state, tokens)
  lower_s = time.perf_counter() - start
  lowered.compile()
  total = time.perf_counter() - start
  return {'lower_s': lower_s, 'compile_s': total, 'hlo_chars': len(lowered.as_text())}


def run(quick: bool = False) -> list[dict]:
  """One record per variant; quick mode: three families, one compile per point (else
  all variants, the minimum of two compiles per point, alternating lengths)."""
  names = ('lstm', 'transformer_chunked', 'mamba') if quick else tuple(VARIANTS)
  repeats = 1 if quick else 2
  # Absorb one-time backend initialisation before the first measured compile.
  jax.jit(lambda x: x + 1).lower(jnp.ones(2)).compile()
  records = []
  for name in names:
    cfg = ModelConfig(head='lm', vocab_size=256, d_model=128, num_layers=2, num_heads=4,
                      max_len=LONG + 1, **VARIANTS[name])
    runs = {LONG: [], SHORT: []}
    for _ in range(repeats):
      for time_ in (LONG, SHORT):
        runs[time_].append(_compile_seconds(cfg, time_))
    long_, short = (min(runs[t], key=lambda r: r['compile_s']) for t in (LONG, SHORT))
    ratio = long_['compile_s'] / short['compile_s']
    records.append({'bench': 'compile_time', 'variant': name, 'batch': BATCH,
                    'T_short': SHORT, 'T_long': LONG, 'compiles_per_point': repeats,
                    'compile_s_short': short['compile_s'], 'compile_s_long': long_['compile_s'],
                    'lower_s_short': short['lower_s'], 'lower_s_long': long_['lower_s'],
                    'hlo_chars_short': short['hlo_chars'], 'hlo_chars_long': long_['hlo_chars'],
                    'ratio_long_over_short': ratio,
                    'target': 'compile-time ratio T=4096 / T=256 <= 1.5',
                    'target_met': bool(ratio <= 1.5)})
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=True)
