"""Claim: LSTMs train slowly because they are sequential; Transformers train fast because
every position is computed in parallel. SSMs: recurrent, yet trainable in parallel."""

from __future__ import annotations

import os

from experiments.comparison import plots
from experiments.comparison.measure import (OUT_OF_MEMORY, compiled, concurrently,
                                            lm_functions, timed_unless_out_of_memory)
from experiments.comparison.report import Finding, markdown_table
from experiments.comparison.suite import REVIVAL, Suite, model_config

# How each SSM runs a whole sequence: its recurrence as a sequential and as a parallel
# (associative) scan, and S4D's default FFT convolution with its SSM kernel. Mamba's
# sequential form is its default fused scan (chunks of steps with a custom VJP); its
# parallel form goes through the materialised [batch, time, 2d, state] decays.
# The Transformer runs with both attentions, named: exact [T, T] weights and the
# memory-efficient chunked (online-softmax) one, which is the faster at long lengths
# (``auto`` picks exact on CPU below 1,024 tokens and chunked from there).
TRANSFORMER_ATTENTIONS = {'exact': {'impl': 'attention:exact'},
                          'chunked': {'impl': 'attention:chunked'}}
# Hawk's RG-LRU is a diagonal linear recurrence too, run by the same scans.
SSM_SCANS = {
    's4d': {'sequential': {'impl': 's4d:scan,scan:sequential'},
            'associative': {'impl': 's4d:scan,scan:associative'},
            'convolution': {'impl': 's4d:convolution'}},
    'mamba': {'sequential': {'impl': 'selective_scan:fused'},
              'associative': {'impl': 'selective_scan:materialized,scan:associative'}},
    'hawk': {'sequential': {'impl': 'scan:sequential'},
             'associative': {'impl': 'scan:associative'}},
}


def variants(families: list[str]) -> list[tuple[str, dict]]:
  """(label, config overrides): SSMs once per kind of scan, the Transformer once per
  attention, the rest once."""
  out = []
  for family in families:
    if family == 'transformer':
      out += [(f'transformer ({kind} attention)', overrides)
              for kind, overrides in TRANSFORMER_ATTENTIONS.items()]
    elif family in SSM_SCANS:
      out += [(f'{family} ({kind}{"" if kind == "convolution" else " scan"})', overrides)
              for kind, overrides in SSM_SCANS[family].items()]
    else:
      out.append((family, {}))
  return out


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  grid = [(label, overrides, length) for label, overrides in variants(families)
          for length in suite.speed_lengths]

  def build(point):
    label, overrides, length = point
    cfg = model_config(suite, label.split(' ')[0], max_len=length + 1, **overrides)
    params, tokens, grad_fn, _ = lm_functions(cfg, suite.batch_size, length + 1, seed)
    return cfg, compiled(grad_fn, params, tokens), (params, tokens)

  records = []
  # Compiled side by side, then timed one at a time with nothing else running.
  for (label, _, length), (cfg, program, args) in zip(grid, concurrently(build, grid)):
    ms = timed_unless_out_of_memory(program, *args, repeats=suite.repeats)
    records.append({'model': label, 'family': label.split(' ')[0], 'seq_len': length,
                    'd_model': cfg.d_model, 'ms_per_step': ms,  # None: out of memory
                    'tokens_per_s': None if ms is None else
                    suite.batch_size * length / (ms / 1e3)})
  figure = 'speed.png'
  plots.lines(records, x='seq_len', y='ms_per_step', group='model',
              path=os.path.join(outdir, figure),
              title='Training step (forward + backward) time vs sequence length',
              xlabel='sequence length (tokens)', ylabel='ms per step (median)', loglog=True)
  return Finding(
      experiment='speed', title='1. Training speed: sequential vs parallel',
      claim='LSTM: sequential computation, slow training. Transformer: all tokens in '
            'parallel, fast training. SSMs (Mamba) keep a recurrence but train in parallel.',
      prediction='At equal parameter count the Transformer step is faster than the LSTM '
                 'step, and the gap grows with length; the parallel (associative) scan '
                 'beats the sequential one for SSMs.',
      measured=_summary(records, suite),
      verdict=_verdict(records, suite), figures=[figure], records=records)


def _at(records, model, length):
  """Milliseconds per step, or None (not measured, or out of memory)."""
  for r in records:
    if r['model'] == model and r['seq_len'] == length:
      return r['ms_per_step']
  return None


def _shown(records, model, length):
  """The table's cell: milliseconds, ``OUT_OF_MEMORY``, or None (not measured)."""
  row = next((r for r in records if r['model'] == model and r['seq_len'] == length), None)
  return None if row is None else (
      OUT_OF_MEMORY if row['ms_per_step'] is None else row['ms_per_step'])


def _ratio(records, a, b, length) -> float | None:
  """``a``'s time over ``b``'s at ``length``; None where either has no time."""
  x, y = _at(records, a, length), _at(records, b, length)
  return None if x is None or y is None else x / y


def _out_of_memory(records) -> list[str]:
  failed = [r for r in records if r['ms_per_step'] is None]
  if not failed:
    return []
  return ['Out of memory on this device (no time): ' + ', '.join(
      f'{r["model"]} at T={r["seq_len"]}' for r in failed) + '.']


def _summary(records, suite) -> str:
  models = list(dict.fromkeys(r['model'] for r in records))
  rows = [{'model': m, **{f'T={t}': _shown(records, m, t) for t in suite.speed_lengths}}
          for m in models]
  cols = ['model'] + [f'T={t}' for t in suite.speed_lengths]
  return ('Median milliseconds per forward+backward pass, batch '
          f'{suite.batch_size}, ~{suite.target_params:,} parameters per model. Mamba\'s '
          'sequential scan is its default fused, chunked scan; its associative scan runs on '
          'the materialised `[batch, time, 2d, state]` decays. S4D\'s default is the FFT '
          'convolution with its SSM kernel (it has no input-dependent dynamics). The '
          'Transformer runs with exact attention (`[T, T]` weights) and with '
          'memory-efficient chunked attention (online softmax over blocks); `auto` picks '
          'exact on CPU below 1,024 tokens and chunked from there. Other families with '
          'attention (Griffin\'s local attention) run `auto`.\n\n' +
          markdown_table(rows, cols, {c: '.1f' for c in cols[1:]}))


def _verdict(records, suite) -> str:
  """The LSTM against each Transformer variant at every length; the head verdict holds
  only if it holds against both attentions (exact and chunked)."""
  parts, outcomes = [], []
  models = {r['model'] for r in records}
  for kind in TRANSFORMER_ATTENTIONS:
    transformer = f'transformer ({kind} attention)'
    if not {'lstm', transformer} <= models:
      continue
    ratios = {t: _ratio(records, 'lstm', transformer, t) for t in suite.speed_lengths}
    ratios = {t: r for t, r in ratios.items() if r is not None}
    if not ratios:
      continue
    faster = [t for t, r in ratios.items() if r > 1]
    text = ', '.join(f'T={t}: {r:.2f}x' for t, r in ratios.items())
    parts.append(f'LSTM time / Transformer ({kind} attention) time: {text}.')
    outcomes.append('supported' if len(faster) == len(ratios) else
                    'contradicted' if not faster else 'mixed')
    if faster and len(faster) < len(ratios):
      parts.append(f'The Transformer ({kind} attention) is faster only at T in {faster}.')
  exact, chunked = (f'transformer ({k} attention)' for k in TRANSFORMER_ATTENTIONS)
  if {exact, chunked} <= models:
    t = suite.speed_lengths[-1]
    if _ratio(records, chunked, exact, t) is not None:
      parts.append(f'Chunked / exact attention time at T={t}: '
                   f'{_ratio(records, chunked, exact, t):.2f}.')
  parts += _revival(records, suite) + _out_of_memory(records)
  for family in SSM_SCANS:
    seq, par = f'{family} (sequential scan)', f'{family} (associative scan)'
    t = suite.speed_lengths[-1]
    if {seq, par} <= models and _ratio(records, seq, par, t) is not None:
      ratio = _ratio(records, seq, par, t)
      if abs(ratio - 1) < 0.05:
        outcome = 'about equal'
      elif ratio > 1:
        outcome = 'the parallel scan is faster'
      else:
        outcome = ('the sequential scan is faster on this device: the parallel scan trades '
                   'about twice the arithmetic and memory traffic for log-depth '
                   'parallelism, which pays off only on wide parallel hardware')
      parts.append(f'{family}: sequential / associative scan time at T={t} is '
                   f'{ratio:.2f} ({outcome}).')
    conv = f'{family} (convolution)'
    if {seq, conv} <= models and _ratio(records, conv, seq, t) is not None:
      ratio = _ratio(records, conv, seq, t)
      parts.append(f'{family}: the FFT convolution (its default parallel form) takes '
                   f'{ratio:.2f}x the time of the sequential scan at T={t}.')
  head = (outcomes[0] if len(set(outcomes)) == 1 else 'mixed') if outcomes else 'not measured'
  return f'{head.capitalize()}. ' + ' '.join(parts)


def _revival(records, suite) -> list[str]:
  """The recurrent revival against the LSTM at the longest length: does dropping the
  hidden-to-hidden matmul from the gates (min_gru, min_lstm, hawk, mlstm, mamba2) buy
  the speed the LSTM lacks, and does the sLSTM, which keeps it, pay like the LSTM?"""
  t = suite.speed_lengths[-1]
  revival = [m for m in dict.fromkeys(r['model'] for r in records)
             if m.split(' ')[0] in REVIVAL and _ratio(records, m, 'lstm', t) is not None]
  if not revival:
    return []
  return [f'Recurrent revival, step time / LSTM step time at T={t}: ' +
          ', '.join(f'{m} {_ratio(records, m, "lstm", t):.2f}' for m in revival) + '.']
