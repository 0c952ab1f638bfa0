"""LSTM training-step benchmark: seqjax variants vs Flax ``OptimizedLSTMCell`` (issue 6, item 1).

One step = forward over ``x`` ``[B, T, E]``, loss = sum of the outputs, gradients w.r.t. the
parameters and the inputs (B=32, T=256, E=H=256, float32). Variants:

* ``seqjax_fused``: :class:`seqjax.layers.lstm.LSTM` default (fused scan + hand-written
  backward, ``seqjax.layers.recurrent_vjp``);
* ``seqjax_autodiff`` / ``seqjax_autodiff_hoist``: autodiff of ``masked_scan`` with the
  input projection per step / hoisted;
* ``flax_optimized_lstm``: ``flax.linen.RNN(flax.linen.OptimizedLSTMCell(H))``;
* ``torch_lstm``: ``torch.nn.LSTM`` (eager, ``torch.set_num_threads`` = core count) when
  ``import torch`` works; optional, the benchmark runs unchanged without torch.

FLOPs counted: the LSTM matmuls only, forward ``2·B·T·4H·(E+H)``, backward 2× forward.
``frac_matmul_peak`` divides by the GFLOP/s of a 2048^3 float32 matmul (the
``common.matmul_peak_gflops`` kernel) timed round-robin with the variants, so both see the
same load from other jobs. ``*_best`` fields use the minimum over repeats and
``speedup_vs_flax_cpu`` the process CPU time (less sensitive to a shared machine).
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scripts.benchmarks import common
from seqjax.layers.lstm import LSTM


def _seqjax_step(batch: int, time_: int, emb: int, hidden: int, **kwargs: Any):
  model = LSTM(emb, hidden, **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, time_, emb), jnp.float32)
  params = model.init(jax.random.PRNGKey(1), x[:, :2])['params']
  loss = lambda p, x: jnp.sum(model.apply({'params': p}, x))
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x)


def _flax_step(batch: int, time_: int, emb: int, hidden: int):
  model = nn.RNN(nn.OptimizedLSTMCell(hidden))
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, time_, emb), jnp.float32)
  params = model.init(jax.random.PRNGKey(1), x)['params']
  loss = lambda p, x: jnp.sum(model.apply({'params': p}, x))
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x)


def _torch_step(batch: int, time_: int, emb: int, hidden: int):
  """``torch.nn.LSTM`` train step as a ``(fn, args)`` entry for the round-robin timing
  (same loss: sum of the outputs; gradients w.r.t. the parameters and the input), or
  None when torch is not installed. Uses every core, like XLA.

  Note torch's LSTM has two bias vectors per gate (``b_ih``, ``b_hh``); the extra adds
  are negligible next to the matmuls.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional peer, not a dependency
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(emb, hidden, batch_first=True)
  x = torch.randn(batch, time_, emb, requires_grad=True)

  def step():
    # torch runs eagerly: backward() returns after the gradients are computed, so the
    # harness's block_until_ready on the returned None times the whole step.
    lstm.zero_grad()
    x.grad = None
    lstm(x)[0].sum().backward()

  return step, ()


def run(quick: bool = False) -> list[dict]:
  """Benchmarks one LSTM training step per variant; returns one record per variant."""
  batch, time_, emb, hidden = 32, 256, 256, 256
  repeats = 5 if quick else 11
  flops = 3 * 2 * batch * time_ * 4 * hidden * (emb + hidden)  # fwd + 2x fwd for bwd
  variants = {
      'flax_optimized_lstm': lambda: _flax_step(batch, time_, emb, hidden),
      'seqjax_fused': lambda: _seqjax_step(batch, time_, emb, hidden),
      'seqjax_autodiff': lambda: _seqjax_step(batch, time_, emb, hidden,
                                              fused_backward=False),
      'seqjax_autodiff_hoist': lambda: _seqjax_step(
          batch, time_, emb, hidden, fused_backward=False, hoist_input_projection=True),
  }
  # Round-robin timing: other jobs' load hits every variant alike (shared machine).
  # The matmul peak is timed in the same rounds, so it sees the same load.
  n = 2048
  square = jnp.ones((n, n), jnp.float32)
  fns = {name: make() for name, make in variants.items()}
  fns['_matmul'] = (jax.jit(lambda a: a @ a), (square,))
  torch_entry = _torch_step(batch, time_, emb, hidden)
  if torch_entry is not None:
    fns['torch_lstm'] = torch_entry
  timings = common.time_interleaved(fns, repeats=repeats)
  matmul = timings.pop('_matmul')
  peak = 2 * n ** 3 / (matmul['median_ms'] * 1e-3) / 1e9
  peak_best = 2 * n ** 3 / (matmul['min_ms'] * 1e-3) / 1e9
  flax_ms = timings['flax_optimized_lstm']['median_ms']
  records = []
  for name, t in timings.items():
    ms = t['median_ms']
    gflops = flops / (ms * 1e-3) / 1e9
    records.append({
        'bench': 'lstm_train_step', 'variant': name, 'batch': batch, 'time': time_,
        'embed': emb, 'hidden': hidden, 'dtype': 'float32', 'median_ms': ms,
        'min_ms': t['min_ms'], 'tokens_per_s': batch * time_ / (ms * 1e-3),
        'gflops': gflops, 'matmul_peak_gflops': peak, 'frac_matmul_peak': gflops / peak,
        'speedup_vs_flax': flax_ms / ms,
        'frac_matmul_peak_best': flops / (t['min_ms'] * 1e-3) / 1e9 / peak_best,
        'speedup_vs_flax_best': timings['flax_optimized_lstm']['min_ms'] / t['min_ms'],
        'median_cpu_ms': t.get('median_cpu_ms'),
        'speedup_vs_flax_cpu': (timings['flax_optimized_lstm'].get('median_cpu_ms', 0)
                                / t['median_cpu_ms']) if 'median_cpu_ms' in t else None})
  return records


if __name__ == '__main__':
  common.run_standalone(run, __doc__)
