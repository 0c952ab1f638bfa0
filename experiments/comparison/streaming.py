"""Claim: on long sequences an LSTM infers fast (it streams with a fixed state) while a
Transformer slows down as the context grows."""

from __future__ import annotations

import os

from experiments.comparison import plots
from experiments.comparison.measure import concurrently, decode_program, timed
from experiments.comparison.report import Finding, growth_exponent, markdown_table
from experiments.comparison.suite import Suite, model_config

DECODE_STEPS = 64


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  del seed  # latency does not depend on the weights
  # A Transformer's KV cache holds `context` tokens; recurrent states are fixed-size.
  grid = [(family, context) for family in families for context in suite.stream_contexts]
  configs = [model_config(suite, family, max_len=context) for family, context in grid]
  programs = concurrently(lambda cfg: decode_program(cfg, DECODE_STEPS), configs)
  records = []
  for (family, context), cfg, program in zip(grid, configs, programs):
    ms = timed(*program, repeats=suite.repeats) / DECODE_STEPS  # one at a time
    records.append({'family': family, 'context': context, 'd_model': cfg.d_model,
                    'ms_per_token': ms, 'tokens_per_s': 1e3 / ms})
  figure = 'streaming.png'
  plots.lines(records, x='context', y='ms_per_token', group='family',
              path=os.path.join(outdir, figure),
              title='Streaming decode: latency per token vs context length (batch 1)',
              xlabel='context length (tokens; KV-cache size for the Transformer)',
              ylabel='ms per generated token (median)', loglog=True)
  return Finding(
      experiment='streaming', title='3. Streaming inference on long contexts',
      claim='LSTM inference on long sequences is fast (streaming, fixed state); '
            'Transformer inference is slow and grows with the context.',
      prediction='Per-token latency is flat in the context for LSTM and SSMs and grows '
                 '(linearly with a KV cache) for the Transformer.',
      measured=_summary(records, suite), verdict=_verdict(records, suite),
      figures=[figure], records=records)


def _ratio(records, family, suite):
  rows = {r['context']: r['ms_per_token'] for r in records if r['family'] == family}
  return rows[suite.stream_contexts[-1]] / rows[suite.stream_contexts[0]]


def _summary(records, suite) -> str:
  rows = []
  for family in dict.fromkeys(r['family'] for r in records):
    by_ctx = {r['context']: r for r in records if r['family'] == family}
    rows.append({'family': family,
                 **{f'ms @ {c}': by_ctx[c]['ms_per_token'] for c in suite.stream_contexts},
                 'longest / shortest': _ratio(records, family, suite),
                 'exponent': growth_exponent(list(by_ctx),
                                             [r['ms_per_token'] for r in by_ctx.values()])})
  cols = list(rows[0])
  return (f'Median milliseconds per token over a {DECODE_STEPS}-token streaming decode '
          '(one `lax.scan` of `step`), batch 1; exponent = slope of log(latency) vs '
          'log(context).\n\n' + markdown_table(rows, cols, {c: '.3f' for c in cols[1:]}))


def _exponent(records, family):
  rows = [r for r in records if r['family'] == family]
  return growth_exponent([r['context'] for r in rows], [r['ms_per_token'] for r in rows])


def _verdict(records, suite) -> str:
  """Judged on the fitted exponent (robust to one noisy point): flat means |slope| < 0.15
  on log-log axes, growing means slope > 0.5."""
  notes, ok = [], True
  for family in dict.fromkeys(r['family'] for r in records):
    slope, ratio = _exponent(records, family), _ratio(records, family, suite)
    if family == 'transformer':
      ok &= slope > 0.5
      notes.append(f'Transformer latency grows {ratio:.1f}x from context '
                   f'{suite.stream_contexts[0]} to {suite.stream_contexts[-1]} '
                   f'(slope {slope:.2f}; 1 = linear in the KV-cache length)')
    else:
      ok &= abs(slope) < 0.15
      notes.append(f'{family} slope {slope:.2f} ({ratio:.2f}x)')
  return ('Supported' if ok else 'Mixed') + '. ' + '; '.join(notes) + '.'
