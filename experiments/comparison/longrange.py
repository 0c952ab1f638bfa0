"""Claim: an LSTM's long-range memory is limited by its hidden state; a Transformer attends
directly to every position. Measured on the synthetic long-range diagnostics, every family
trained with the same budget at the same parameter count."""

from __future__ import annotations

import os

from experiments.comparison import plots
from experiments.comparison.report import Finding, markdown_table
from experiments.comparison.suite import Suite
from experiments.comparison.training import train_run

# task -> (the option that sets the distance / length, values from short to long).
TASKS = {
    'copying': ('delay', (10, 40, 160)),
    'selective_copying': ('seq_len', (32, 128, 512)),
    'mqar': ('seq_len', (32, 128, 512)),
    'induction_heads': ('seq_len', (32, 128, 512)),
    'adding': ('seq_len', (50, 200, 800)),
}


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  records = []
  for task in suite.longrange_tasks:
    option, values = TASKS[task]
    for value in values[:suite.longrange_lengths]:
      for family in families:
        workdir = os.path.join(outdir, 'runs', f'{task}_{option}{value}_{family}')
        record = train_run(task, family, workdir=workdir,
                           target_params=suite.train_target_params,
                           steps=suite.train_steps, seed=seed,
                           task_options={option: value}, max_d_model=suite.max_d_model,
                           num_train=suite.train_examples)
        records.append({**record, 'distance_option': option, 'distance': value})
  figures = []
  for task in suite.longrange_tasks:
    rows = [r for r in records if r['task'] == task]
    if not rows:
      continue
    name = f'longrange_{task}.png'
    plots.lines(rows, x='distance', y='value', group='family',
                path=os.path.join(outdir, name),
                title=f'{task}: test {rows[0]["metric"]} vs {rows[0]["distance_option"]} '
                      f'({suite.train_steps} steps each)',
                xlabel=rows[0]['distance_option'], ylabel=f'test {rows[0]["metric"]}',
                loglog=False)
    figures.append(name)
  return Finding(
      experiment='longrange', title='4. Long-range dependency',
      claim='LSTM: long-range dependency limited by the hidden state. Transformer: direct '
            'attention across all positions.',
      prediction='On recall-type tasks the Transformer beats the LSTM, more so as the '
                 'distance grows; SSMs sit in between (Mamba near the Transformer on '
                 'selective copying, Gu & Dao 2023).',
      measured=_summary(records, suite), verdict=_verdict(records), figures=figures,
      records=records)


def _summary(records, suite) -> str:
  cols = ['task', 'distance', 'family', 'params', 'metric', 'value']
  return (f'Test metric after {suite.train_steps} training steps (batch 32, AdamW, '
          f'warmup + cosine), every family matched to ~{suite.train_target_params:,} '
          'parameters; one seed. Larger is better except for `mse`.\n\n' +
          markdown_table(records, cols, {'value': '.3f'}))


def _verdict(records) -> str:
  wins, comparisons, notes = 0, 0, []
  for task in dict.fromkeys(r['task'] for r in records):
    for distance in dict.fromkeys(r['distance'] for r in records if r['task'] == task):
      by = {r['family']: r for r in records
            if r['task'] == task and r['distance'] == distance}
      if 'lstm' in by and 'transformer' in by:
        comparisons += 1
        lstm, tf = by['lstm'], by['transformer']
        better = (tf['value'] > lstm['value']) == tf['larger_is_better']
        wins += better
        notes.append(f'{task}@{distance}: Transformer {tf["value"]:.3f} vs LSTM '
                     f'{lstm["value"]:.3f}')
  if not comparisons:
    return 'Not measured (needs both lstm and transformer).'
  head = ('Supported' if wins == comparisons else
          'Contradicted' if wins == 0 else 'Mixed')
  return (f'{head}: the Transformer beat the LSTM in {wins} of {comparisons} settings at '
          'this budget. ' + '; '.join(notes) + '.')
