"""Streaming decode: per-token latency vs context for every causal family (issue 6, item 5).

Each family is a seqjax ``CausalLM`` (``d_model=256``, 2 residual layers, vocab 256,
float32, batch 1). A measurement decodes ``NEW`` tokens greedily with ``lax.scan`` over the
model's ``step`` (the path ``seqjax.models.generate`` uses), starting from a state that is
``context`` tokens into the sequence: every position counter (``index``) in the state is
set to ``context``. The cost of a step does not depend on the state's values, so this
avoids prefilling thousands of tokens one by one just to set up the timing.

* LSTM / GRU / S4D / Mamba and the recurrent revival (minGRU, minLSTM, Hawk, mLSTM,
  sLSTM, xLSTM, Mamba-2; Griffin, whose local attention keeps a ring buffer of its 1024-token
  window) carry a fixed-size state: one compiled program serves every context, and the
  per-token latency should be flat (target: max/min ratio <= 1.1).
* The Transformer's KV cache holds ``max_len = context + NEW`` slots and each step reads
  the whole cache (masked past ``index``), so per-token cost should grow linearly with the
  context (target: log-log slope well below 2; a linear fit is reported too).

Contexts: 512, 2K, 8K (quick: 256, 1K, 4K, and one family per classic kind: LSTM,
Transformer, Mamba).
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from scripts.benchmarks import common
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model
from seqjax.utils.timing import compile_with_stats

FAMILIES = ('lstm', 'gru', 'transformer', 's4d', 'mamba', 'min_gru', 'min_lstm', 'hawk',
            'griffin', 'mlstm', 'slstm', 'xlstm', 'mamba2')
QUICK_FAMILIES = ('lstm', 'transformer', 'mamba')  # keeps `bench --quick` under 3 min
NEW = 64


def _config(family: str, max_len: int) -> ModelConfig:
  return ModelConfig(model=family, head='lm', vocab_size=256, d_model=256, num_layers=2,
                     num_heads=4, max_len=max_len)


def _at_position(state, context: int):
  """``state`` with every ``index`` counter set to ``context`` (int32 scalars)."""
  def set_index(path, leaf):
    last = path[-1] if path else None
    if getattr(last, 'key', None) == 'index':
      return jnp.full_like(leaf, context)
    return leaf
  return jax.tree_util.tree_map_with_path(set_index, state)


def _decoder(model):
  def decode(params, state, token):
    def body(carry, _):
      state, token = carry
      state, logits = model.apply({'params': params}, state, token, method='step')
      return (state, jnp.argmax(logits, -1).astype(jnp.int32)), None
    (state, token), _ = jax.lax.scan(body, (state, token), None, length=NEW)
    return token
  return decode


def _measure(family: str, contexts: tuple[int, ...], quick: bool) -> list[dict]:
  """Per-token latency at each context, timed in interleaved rounds.

  Round-robin over the contexts (rather than all repeats of one context, then the next)
  spreads load drift on a shared machine evenly over the points being compared.
  """
  cases = []
  compiled = None
  for context in contexts:
    # Only the Transformer's cache (and so its program) depends on the context.
    max_len = context + NEW if family == 'transformer' else max(contexts) + NEW
    model = build_model(_config(family, max_len))
    if compiled is None or family == 'transformer':
      params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))['params']
      state0 = model.apply({'params': params}, 1, method='init_state')
      token = jnp.ones((1,), jnp.int32)
      compiled, stats = compile_with_stats(_decoder(model), params, state0, token)
    args = (params, _at_position(state0, context), token)
    jax.block_until_ready(compiled(*args))  # warm-up
    cases.append((context, compiled, args, stats))
  times = {context: [] for context in contexts}
  for _ in range(5 if quick else 9):
    for context, fn, args, _ in cases:
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[context].append((time.perf_counter() - start) * 1e3)
  records = []
  for context, _, _, stats in cases:
    median = statistics.median(times[context])
    per_token = median / NEW
    records.append({'bench': 'decode', 'family': family, 'context': context,
                    'new_tokens': NEW, 'batch': 1, 'ms_per_token': per_token,
                    'min_ms_per_token': min(times[context]) / NEW,
                    'tokens_per_s': 1e3 / per_token, 'compile_s': stats['compile_s'],
                    'median_ms': median, 'repeats': len(times[context])})
  return records


def _summary(family: str, rows: list[dict]) -> dict:
  """Flatness / linearity of per-token latency in the context.

  Judged on the per-context minimum over the interleaved rounds: the executable is the
  same at every context for the fixed-state families, so differences between medians are
  load noise, and noise on a shared machine only ever adds time. Medians are reported too.
  """
  ctx = np.array([r['context'] for r in rows], float)
  med = np.array([r['ms_per_token'] for r in rows], float)
  lat = np.array([r['min_ms_per_token'] for r in rows], float)
  out = {'bench': 'decode', 'family': family, 'variant': 'summary',
         'contexts': ctx.astype(int).tolist(),
         'latency_ratio_max_over_min_context': float(lat[-1] / lat[0]),
         'median_latency_ratio_max_over_min_context': float(med[-1] / med[0])}
  if family == 'transformer':
    # log-log slope between the extreme contexts: 1 = linear, 2 = quadratic; it includes
    # the context-independent part (MLPs, projections), so it sits below the true order.
    slope = math.log(lat[-1] / lat[0]) / math.log(ctx[-1] / ctx[0])
    coef = np.polyfit(ctx, lat, 1)
    pred = np.polyval(coef, ctx)
    r2 = 1 - np.sum((lat - pred) ** 2) / max(np.sum((lat - lat.mean()) ** 2), 1e-30)
    out.update(loglog_slope=slope, linear_fit_ms_per_1k_context=float(coef[0] * 1e3),
               linear_fit_intercept_ms=float(coef[1]), linear_fit_r2=float(r2),
               target='per-token cost linear in context (log-log slope <= 1.2)',
               target_met=bool(slope <= 1.2))
  else:
    out.update(target='per-token latency flat in context (ratio <= 1.1)',
               target_met=bool(lat[-1] / lat[0] <= 1.1))
  return out


def run(quick: bool = False) -> list[dict]:
  contexts = (256, 1024, 4096) if quick else (512, 2048, 8192)
  records = []
  for family in QUICK_FAMILIES if quick else FAMILIES:
    rows = _measure(family, contexts, quick)
    records.extend(rows)
    records.append(_summary(family, rows))
  return records


if __name__ == '__main__':
  common.run_standalone(run, quick=True)
