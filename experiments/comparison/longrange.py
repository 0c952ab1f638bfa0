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
  for record in records:
    record['score'] = score(record)
  figures = _figures(records, suite, outdir)
  return Finding(
      experiment='longrange', title='4. Long-range dependency',
      claim='LSTM: long-range dependency limited by the hidden state. Transformer: direct '
            'attention across all positions.',
      prediction='On recall-type tasks the Transformer beats the LSTM, more so as the '
                 'distance grows; SSMs sit in between (Mamba near the Transformer on '
                 'selective copying, Gu & Dao 2023).',
      measured=_summary(records, suite), verdict=_verdict(records), figures=figures,
      records=records)


# The adding problem's target is the sum of two U[0, 1) values: predicting its mean gives
# MSE Var = 2/12 (Le et al. 2015), the baseline a model must beat.
ADDING_BASELINE_MSE = 1 / 6
# Two scores closer than this are a tie; two models that both reach SOLVED tie too.
TIE_MARGIN, SOLVED = 0.02, 0.95


def score(record) -> float:
  """One larger-is-better number per run: the accuracy, or for a regression the fraction
  of the baseline's error removed, ``1 - MSE / MSE(predict the mean)``."""
  if record['larger_is_better']:
    return record['value']
  return 1.0 - record['value'] / ADDING_BASELINE_MSE


def _figures(records, suite, outdir) -> list[str]:
  """Line plots of score vs distance per task, or one grouped bar chart when the suite
  measures a single distance per task (a line through one point says nothing)."""
  tasks = list(dict.fromkeys(r['task'] for r in records))
  families = list(dict.fromkeys(r['family'] for r in records))
  ylabel = 'test score (accuracy; adding: 1 - MSE/baseline MSE)'
  if suite.longrange_lengths == 1:
    by = {(r['task'], r['family']): r['score'] for r in records}
    labels = [f'{t}\n@{next(r["distance"] for r in records if r["task"] == t)}'
              for t in tasks]
    plots.grouped_bars(labels, {f: [by.get((t, f), 0.0) for t in tasks] for f in families},
                       path=os.path.join(outdir, 'longrange.png'),
                       title=f'Long-range tasks: test score after {suite.train_steps} steps, '
                             'matched parameters', ylabel=ylabel, reference=SOLVED,
                       reference_label=f'solved ({SOLVED})')
    return ['longrange.png']
  figures = []
  for task in tasks:
    rows = [r for r in records if r['task'] == task]
    name = f'longrange_{task}.png'
    plots.lines(rows, x='distance', y='score', group='family',
                path=os.path.join(outdir, name),
                title=f'{task}: test score vs {rows[0]["distance_option"]} '
                      f'({suite.train_steps} steps each)',
                xlabel=rows[0]['distance_option'], ylabel=ylabel, loglog=False)
    figures.append(name)
  return figures


def _summary(records, suite) -> str:
  cols = ['task', 'distance', 'family', 'params', 'metric', 'value', 'score']
  return (f'Test metric after {suite.train_steps} training steps (batch 32, AdamW, '
          f'warmup + cosine), every family matched to ~{suite.train_target_params:,} '
          'parameters; one seed. `score` is the accuracy, or for the adding problem '
          '`1 - MSE / (1/6)` (1/6 is the MSE of always predicting the mean). Two scores '
          f'within {TIE_MARGIN} of each other, or both at least {SOLVED}, count as a tie.'
          '\n\n' + markdown_table(records, cols, {'value': '.3f', 'score': '.3f'}))


def _verdict(records) -> str:
  outcomes, notes = {'win': 0, 'tie': 0, 'loss': 0}, []
  for task in dict.fromkeys(r['task'] for r in records):
    for distance in dict.fromkeys(r['distance'] for r in records if r['task'] == task):
      by = {r['family']: r['score'] for r in records
            if r['task'] == task and r['distance'] == distance}
      best = max(by, key=by.get)
      note = f'{task}@{distance}: best {best} {by[best]:.3f}'
      if 'lstm' in by and 'transformer' in by:
        lstm, tf = by['lstm'], by['transformer']
        tie = abs(tf - lstm) < TIE_MARGIN or min(tf, lstm) >= SOLVED
        outcomes['tie' if tie else 'win' if tf > lstm else 'loss'] += 1
        note += f', Transformer {tf:.3f} vs LSTM {lstm:.3f}'
      notes.append(note)
  settings = sum(outcomes.values())
  if not settings:
    return 'Not measured (needs both lstm and transformer).'
  head = ('Supported' if outcomes['win'] and not outcomes['loss'] else
          'Contradicted' if outcomes['loss'] and not outcomes['win'] else 'Mixed')
  return (f'{head}: at this budget the Transformer beat the LSTM in {outcomes["win"]}, tied '
          f'in {outcomes["tie"]} and lost in {outcomes["loss"]} of {settings} settings. ' +
          '; '.join(notes) + '.')
