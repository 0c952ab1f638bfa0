"""LSTM (and GRU) training-step benchmark: seqjax variants vs Flax's cells (issue 6, item 1).

One step = forward over ``x`` ``[B, T, E]``, loss = sum of the outputs, gradients w.r.t. the
parameters and the inputs (B=32, T=256, E=H=256, float32). Variants:

* ``seqjax_fused``: :class:`seqjax.layers.lstm.LSTM` default (fused scan + hand-written
  backward, ``seqjax.layers.lstm_vjp``);
* ``seqjax_autodiff`` / ``seqjax_autodiff_hoist``: autodiff of ``masked_scan`` with the
  input projection per step / hoisted;
* ``flax_optimized_lstm``: ``flax.linen.RNN(flax.linen.OptimizedLSTMCell(H))``;
* ``torch_lstm``: ``torch.nn.LSTM`` (eager, ``torch.set_num_threads`` = core count) when
  ``import torch`` works; optional, the benchmark runs unchanged without torch.

The GRU gets the same treatment in its own round-robin group (``bench: gru_train_step``):
``seqjax_fused`` (:mod:`seqjax.layers.gru_vjp`), ``seqjax_autodiff``,
``flax_gru`` = ``flax.linen.RNN(flax.linen.GRUCell(H))`` (the ``speedup_vs_flax`` peer)
and ``torch_gru`` = ``torch.nn.GRU`` when torch is installed; FLOPs with ``3H`` gates.
Quick mode times the headline variants only (seqjax's fused default, Flax, torch; 3 repeats).

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
from seqjax.layers.gru import GRU
from seqjax.layers.lstm import LSTM
from seqjax.utils.timing import time_interleaved

SHAPE = (32, 256, 256, 256)  # batch, time, embed, hidden


def _seqjax_step(batch: int, time_: int, emb: int, hidden: int, layer=LSTM, **kwargs: Any):
  model = layer(emb, hidden, **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, time_, emb), jnp.float32)
  params = model.init(jax.random.PRNGKey(1), x[:, :2])['params']
  loss = lambda p, x: jnp.sum(model.apply({'params': p}, x))
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x)


def _flax_step(batch: int, time_: int, emb: int, hidden: int,
               cell=nn.OptimizedLSTMCell):
  model = nn.RNN(cell(hidden))
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, time_, emb), jnp.float32)
  params = model.init(jax.random.PRNGKey(1), x)['params']
  loss = lambda p, x: jnp.sum(model.apply({'params': p}, x))
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x)


def _torch_step(batch: int, time_: int, emb: int, hidden: int, module: str = 'LSTM'):
  """``torch.nn.LSTM`` (or ``torch.nn.<module>``) train step as a ``(fn, args)`` entry for the round-robin timing
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
  lstm = getattr(torch.nn, module)(emb, hidden, batch_first=True)
  x = torch.randn(batch, time_, emb, requires_grad=True)

  def step():
    # torch runs eagerly: backward() returns after the gradients are computed, so the
    # harness's block_until_ready on the returned None times the whole step.
    lstm.zero_grad()
    x.grad = None
    lstm(x)[0].sum().backward()

  return step, ()


def _time_group(bench: str, gates: int, variants: dict, peer: str, torch_entry,
                torch_name: str, quick: bool) -> list[dict]:
  """Times ``variants`` (name -> maker of ``(jitted fn, args)``) round-robin with the
  matmul peak (and torch when installed); one record per variant, ratios against
  ``peer``."""
  batch, time_, emb, hidden = SHAPE
  repeats = 3 if quick else 11
  # fwd + 2x fwd for bwd; gates * H outputs per matmul row
  flops = 3 * 2 * batch * time_ * gates * hidden * (emb + hidden)
  # Round-robin timing: other jobs' load hits every variant alike (shared machine).
  # The matmul peak is timed in the same rounds, so it sees the same load.
  n = 2048
  square = jnp.ones((n, n), jnp.float32)
  fns = {name: make() for name, make in variants.items()}
  fns['_matmul'] = (jax.jit(lambda a: a @ a), (square,))
  if torch_entry is not None:
    fns[torch_name] = torch_entry
  timings = time_interleaved(fns, repeats=repeats)
  matmul = timings.pop('_matmul')
  peak = 2 * n ** 3 / (matmul['median_ms'] * 1e-3) / 1e9
  peak_best = 2 * n ** 3 / (matmul['min_ms'] * 1e-3) / 1e9
  base = timings[peer]
  records = []
  for name, t in timings.items():
    ms = t['median_ms']
    gflops = flops / (ms * 1e-3) / 1e9
    records.append({
        'bench': bench, 'variant': name, 'batch': batch, 'time': time_,
        'embed': emb, 'hidden': hidden, 'dtype': 'float32', 'median_ms': ms,
        'min_ms': t['min_ms'], 'tokens_per_s': batch * time_ / (ms * 1e-3),
        'gflops': gflops, 'matmul_peak_gflops': peak, 'frac_matmul_peak': gflops / peak,
        'speedup_vs_flax': base['median_ms'] / ms,
        'frac_matmul_peak_best': flops / (t['min_ms'] * 1e-3) / 1e9 / peak_best,
        'speedup_vs_flax_best': base['min_ms'] / t['min_ms'],
        'median_cpu_ms': t.get('median_cpu_ms'),
        'speedup_vs_flax_cpu': (base.get('median_cpu_ms', 0) / t['median_cpu_ms'])
                               if 'median_cpu_ms' in t else None})
  return records



def run(quick: bool = False) -> list[dict]:
  """One LSTM, then one GRU training step per variant; one record per variant."""
  lstm_variants = {
      'flax_optimized_lstm': lambda: _flax_step(*SHAPE),
      'seqjax_fused': lambda: _seqjax_step(*SHAPE),
      'seqjax_autodiff': lambda: _seqjax_step(*SHAPE, impl='rnn:autodiff'),
      'seqjax_autodiff_hoist': lambda: _seqjax_step(*SHAPE, impl='rnn:hoisted'),
  }
  gru_variants = {
      'flax_gru': lambda: _flax_step(*SHAPE, cell=nn.GRUCell),
      'seqjax_fused': lambda: _seqjax_step(*SHAPE, layer=GRU),
      'seqjax_autodiff': lambda: _seqjax_step(*SHAPE, layer=GRU, impl='rnn:autodiff'),
  }
  if quick:  # the autodiff variants are design measurements (see the docstring)
    lstm_variants, gru_variants = ({k: v for k, v in variants.items() if 'autodiff' not in k}
                                   for variants in (lstm_variants, gru_variants))
  lstm = _time_group('lstm_train_step', 4, lstm_variants, 'flax_optimized_lstm',
                     _torch_step(*SHAPE), 'torch_lstm', quick)
  gru = _time_group('gru_train_step', 3, gru_variants, 'flax_gru',
                    _torch_step(*SHAPE, module='GRU'), 'torch_gru', quick)
  return lstm + gru


if __name__ == '__main__':
  common.run_standalone(run)
