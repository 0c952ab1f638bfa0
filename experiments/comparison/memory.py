"""Claim: an LSTM needs O(n) memory (a fixed hidden state); a Transformer O(n^2) (the
attention matrix)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from experiments.comparison import plots
from experiments.comparison.measure import OUT_OF_MEMORY, concurrently, lm_functions, temp_bytes
from experiments.comparison.report import Finding, growth_exponent, markdown_table
from experiments.comparison.suite import Suite, model_config


def variants(families: list[str]) -> list[tuple[str, str, dict]]:
  # The plain Transformer row is the textbook [T, T] attention whatever ``auto`` picks
  # at that length (chunked on CPU from 1024 tokens); the chunked row is beside it.
  out = [(f, f, {'impl': 'attention:exact'} if f == 'transformer' else {})
         for f in families]
  if 'transformer' in families:
    out.append(('transformer (chunked attention)', 'transformer',
                {'impl': 'attention:chunked', 'attention_chunk': 128}))
  return out


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  def measure(point):  # compile-time figures: the programs compile side by side
    label, family, overrides, length = point
    cfg = model_config(suite, family, max_len=length + 1, **overrides)
    params, tokens, grad_fn, forward = lm_functions(cfg, 1, length + 1, seed,
                                                    abstract=True)
    return {'model': label, 'seq_len': length, 'd_model': cfg.d_model,
            'train_temp_mib': temp_bytes(grad_fn, params, tokens) / 2**20,
            'infer_temp_mib': temp_bytes(forward, params, tokens[:, :-1]) / 2**20}

  records = concurrently(measure, [(*variant, length) for variant in variants(families)
                                   for length in suite.memory_lengths])
  # Each probe is a fresh process measuring only itself, so they run side by side (one
  # per core): the probes alone took most of this row's time, one after another.
  rss = dict(zip([label for label, _, _ in variants(families)], concurrently(
      lambda v: _peak_rss_mib(v[1], v[2], suite, seed), variants(families))))
  for r in records:
    r['peak_rss_mib_at_shortest'], r['peak_rss_mib_at_longest'] = rss[r['model']]
  figures = []
  for kind in ('train', 'infer'):
    name = f'memory_{kind}.png'
    plots.lines(records, x='seq_len', y=f'{kind}_temp_mib', group='model',
                path=os.path.join(outdir, name),
                title=f'{"Training" if kind == "train" else "Inference"} temporary memory '
                      'vs sequence length (batch 1)',
                xlabel='sequence length (tokens)', ylabel='XLA temporary buffers (MiB)',
                loglog=True)
    figures.append(name)
  exponents = _exponents(records)
  return Finding(
      experiment='memory', title='2. Memory scaling: O(n) vs O(n²)',
      claim='LSTM memory is O(n) with a fixed hidden state; Transformer memory is O(n²) '
            'because of the attention matrix.',
      prediction='The fitted growth exponent of temporary memory vs length is ~1 for the '
                 'LSTM and SSMs and ~2 for exact attention at long lengths.',
      measured=_summary(records, exponents, rss, suite), verdict=_verdict(exponents),
      figures=figures, records=records)


def _exponents(records) -> dict[str, dict[str, float]]:
  """Growth exponents fitted over the longer half of the lengths (where the asymptotic
  term dominates)."""
  out = {}
  for model in dict.fromkeys(r['model'] for r in records):
    rows = sorted((r for r in records if r['model'] == model), key=lambda r: r['seq_len'])
    tail = rows[len(rows) // 2 - 1:] if len(rows) > 3 else rows
    out[model] = {kind: growth_exponent([r['seq_len'] for r in tail],
                                        [max(r[f'{kind}_temp_mib'], 1e-6) for r in tail])
                  for kind in ('train', 'infer')}
  return out


def _summary(records, exponents, rss, suite) -> str:
  longest = suite.memory_lengths[-1]
  rows = []
  for model, exps in exponents.items():
    at = next(r for r in records if r['model'] == model and r['seq_len'] == longest)
    rows.append({'model': model, 'train exponent': exps['train'],
                 'inference exponent': exps['infer'],
                 f'train MiB @ {longest}': at['train_temp_mib'],
                 f'inference MiB @ {longest}': at['infer_temp_mib'],
                 'peak RSS MiB (shortest)': rss[model][0],
                 'peak RSS MiB (longest)': rss[model][1]})
  cols = list(rows[0]) if rows else []
  return ('XLA temporary memory (`compiled.memory_analysis().temp_size_in_bytes`) of one '
          'forward+backward pass and one forward pass, batch 1, lengths '
          f'{list(suite.memory_lengths)}; exponent = slope of log(memory) vs log(length) '
          'over the longer half. Peak RSS: high-water mark of a separate process after the '
          f'training step at length {suite.memory_lengths[0]}, then after the step at '
          f'{longest}; the first is mostly the JAX runtime and compiled code, the '
          'difference is what the longer sequence costs the process.\n\n' +
          markdown_table(rows, cols, {c: '.2f' for c in cols[1:]}))


def _verdict(exponents) -> str:
  notes, ok = [], True
  for model, exps in exponents.items():
    e = exps['train']
    if model == 'transformer':
      ok &= e > 1.5
      notes.append(f'exact attention grows with exponent {e:.2f}')
    elif 'chunked' in model:
      notes.append(f'memory-efficient (chunked) attention grows with exponent {e:.2f}: '
                   'O(n²) memory is a property of the naive implementation, not of '
                   'attention itself (Rabe & Staats 2021)')
    else:
      ok &= e < 1.3
      notes.append(f'{model} grows with exponent {e:.2f}')
  head = 'Supported for exact attention' if ok else 'Mixed'
  return f'{head}. ' + '; '.join(notes) + '.'


def _peak_rss_mib(family, overrides, suite, seed) -> list[float | str]:
  """``[peak RSS after the shortest step, after the longest]`` in MiB, from a fresh
  process so that earlier measurements in this one do not mask it; ``OUT_OF_MEMORY``
  for a step that did not fit, or when the system killed the probe (exit -9)."""
  cmd = [sys.executable, '-m', 'experiments.comparison.rss_probe',
         json.dumps({'family': family, 'overrides': overrides, 'suite': suite.name,
                     'seed': seed})]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__)))))
  if out.returncode == -signal.SIGKILL:  # the kernel's out-of-memory killer
    return [OUT_OF_MEMORY, OUT_OF_MEMORY]
  if out.returncode:
    raise RuntimeError(f'the peak-RSS probe of {family} failed (exit {out.returncode}): '
                       + (out.stderr.strip().splitlines() or ['no output'])[-1])
  peaks = json.loads(out.stdout.strip().splitlines()[-1])
  return [OUT_OF_MEMORY if x is None else float(x) for x in peaks]
