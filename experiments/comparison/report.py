"""Findings and the Markdown report: claim, prediction, measurement, verdict, figures.

Every number in a report comes from the run that wrote it; the environment block records
device, library versions, suite and seed so a reader can reproduce it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any

import flax
import jax
import numpy as np
import optax

from experiments.comparison.suite import Suite


@dataclasses.dataclass
class Finding:
  """The outcome of one experiment.

  Attributes:
    experiment: short name (``speed``, ``memory`` ...), also the CSV/PNG file stem.
    title: section heading.
    claim: the claim under test, as the article's table states it.
    prediction: what the claim predicts this run should measure.
    measured: Markdown summary of the measurement (tables welcome).
    verdict: ``supported`` / ``contradicted`` / ``mixed`` / ``not measured``, with why.
    figures: PNG file names (relative to the output directory).
    records: raw rows, written to ``<experiment>.csv`` and ``results.json``.
  """

  experiment: str
  title: str
  claim: str
  prediction: str
  measured: str
  verdict: str
  figures: list[str] = dataclasses.field(default_factory=list)
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  seconds: float | None = None  # wall time of the experiment, set by the driver


def _git_revision() -> str:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, text=True,
                         capture_output=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root, text=True,
                           capture_output=True, timeout=10, check=True).stdout.strip()
    return out + (' (with uncommitted changes)' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return 'unknown (not a git checkout)'


def environment(suite: Suite, seed: int, families: list[str]) -> dict[str, Any]:
  """Where and how the report was measured: device, versions, command, suite, seed."""
  return {
      'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
      'command': ' '.join(['python -m experiments.compare'] + sys.argv[1:]),
      'seqjax revision': _git_revision(),
      'backend': jax.default_backend(),
      'devices': [f'{d.device_kind} ({d.platform})' for d in jax.devices()],
      'cpu_count': os.cpu_count(),
      'processor': platform.processor() or platform.machine(),
      'python': platform.python_version(),
      'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__,
      'numpy': np.__version__,
      'suite': suite.name, 'seed': seed, 'families': families,
      'suite settings': dataclasses.asdict(suite),
      # A capped run (--max_steps/--max_examples/--max_params) is not the suite's result.
      'capped': suite.capped,
  }


def protocol(suite: Suite) -> str:
  """The tuning and reporting protocol every trained experiment follows, as the report
  states it."""
  seeds = suite.seed_list
  rates = ', '.join(f'{lr:g}' for lr in suite.learning_rates)
  return '\n'.join([
      f'- **Seeds.** Every trained cell (one task setting x one family) runs {len(seeds)} '
      f'seeds ({seeds}); a seed sets the initialisation, the data order and, for synthetic '
      'tasks, the sample of the data. Cells report the mean and the min-max range over '
      'seeds; `results.json` keeps every seed\'s value. No seed is ever dropped.',
      f'- **Learning rate.** Every family gets the same grid ({rates}; AdamW, b1 0.9, '
      'b2 0.98, weight decay 0.01, gradient clipping 1.0, 10 % linear warm-up then cosine '
      'decay over the budget). The rate is chosen per cell on the *validation* split: the '
      'best validation score, capped at the criterion, ties broken by fewer steps to the '
      'criterion; ' + ('the first seed trains with every rate and the choice is made on '
                       'it, then the other seeds train with the chosen rate only'
                       if suite.lr_selection == 'first_seed' else
                       'every seed trains with every rate and the choice is made on the '
                       'mean over seeds') +
      '. The test scores reported are that rate\'s, for every seed.' +
      (' In the long-range sweeps (section 4) the choice is made once per task and '
       'family and reused at the task\'s other settings, which train their seeds with '
       'that rate only. It is made at the hardest setting (at the largest width on MQAR) '
       'where the first seed\'s best rate gets at least halfway from chance to the '
       'criterion on validation, trying easier settings in turn while none does, and at '
       'the easiest if none ever does: a choice among rates that all fail is a choice '
       'made on rounding noise. Every choice on the way is kept (`lr_walk` in '
       '`results.json`).'
       if suite.tune_once_per_task else ''),
      '- **Stopping.** A run stops when its validation score reaches the task\'s '
      'criterion (accuracy 0.99; adding problem: 99 % of the predict-the-mean error '
      'removed), or when its step budget runs out. "Learned in K steps" and "not learned '
      'within B steps" are reported as different outcomes; test scores come from the best '
      'validation checkpoint.',
      '- **Size.** Families are matched on parameter count (the width that comes closest '
      'to the budget), except where width itself is the axis (MQAR, as in Zoology); the '
      'forward FLOPs per token are reported beside the parameters, since equal parameters '
      'can hide unequal compute.',
      f'- **Verdicts.** Family A beats family B in a cell only when their seed ranges do '
      f'not overlap; otherwise the cell is "not separable at {len(seeds)} seeds". '
      + ('With 2 seeds this is a weak rule (two exchangeable families give disjoint '
         'ranges 1 time in 3). ' if len(seeds) == 2 else
         f'(Two families with no real difference give disjoint ranges with probability '
         f'{2 / math.comb(2 * len(seeds), len(seeds)):.2f}.) ') +
      ('This suite is a **preview**: where a run did not converge, its verdict says so '
       'instead of naming a winner.' if suite.preview else ''),
  ] + ([f'- **Capped run.** Training budgets capped at {suite.max_steps or "-"} steps, '
        f'synthetic splits at {suite.max_examples or "-"} examples and parameter targets '
        f'(and long-range fixed widths) at {suite.max_params or "-"} parameters '
        f'(`--max_steps`, `--max_examples`, `--max_params`): this checks that the '
        f'{suite.name} suite runs end to end; it is not that suite\'s result.']
       if suite.capped else []))


def markdown_table(rows: list[dict[str, Any]], columns: list[str],
                   formats: dict[str, str] | None = None) -> str:
  formats = formats or {}
  out = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = []
    for col in columns:
      value = row.get(col, '')
      fmt = formats.get(col)
      if value is None:  # not measured (e.g. an out-of-memory cell has no chosen rate)
        cells.append('-')
      else:
        cells.append(format(value, fmt) if fmt and isinstance(value, (int, float)) else
                     str(value))
    out.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(out)


def write_records(outdir: str, finding: Finding) -> None:
  if not finding.records:
    return
  columns = sorted({key for row in finding.records for key in row})
  with open(os.path.join(outdir, f'{finding.experiment}.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(finding.records)


def write_report(outdir: str, env: dict[str, Any], findings: list[Finding],
                 protocol_text: str = '') -> str:
  """Writes ``report.md``, ``results.json`` and one CSV per experiment; returns the path."""
  for finding in findings:
    write_records(outdir, finding)
  with open(os.path.join(outdir, 'results.json'), 'w') as f:
    json.dump({'environment': env,
               'findings': [dataclasses.asdict(x) for x in findings]}, f, indent=1,
              default=float)
  lines = ['# LSTM vs Transformer vs SSMs: measured', '',
           'Each section takes one claim from the classic comparison table, says what it '
           'predicts, and reports what this run measured. Timings depend on the machine '
           'below; ratios between families measured in the same run are the robust part.',
           '', '## Environment', '']
  lines += [f'- **{key}**: {value}' for key, value in env.items()]
  if protocol_text:
    lines += ['', '## Protocol of the trained experiments', '', protocol_text]
  lines += ['', '## Summary', '',
            markdown_table([{'experiment': x.title, 'verdict': headline(x.verdict),
                             'wall time (s)': '-' if x.seconds is None else x.seconds}
                            for x in findings],
                           ['experiment', 'verdict', 'wall time (s)'],
                           {'wall time (s)': '.0f'}), '']
  for finding in findings:
    lines += [f'## {finding.title}', '', f'**Claim.** {finding.claim}', '',
              f'**Prediction.** {finding.prediction}', '', '**Measured.**', '',
              finding.measured, '']
    lines += [f'![{finding.title}]({name})' for name in finding.figures]
    lines += ['', f'**Verdict.** {finding.verdict}', '']
  path = os.path.join(outdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  return path


def headline(verdict: str) -> str:
  """The verdict's first clause, for the summary table: up to the first full stop or
  semicolon followed by a space (so decimals such as 0.95 stay whole), or only the word(s)
  before a colon when that clause is long."""
  first = re.split(r'[.;]\s', verdict.strip(), maxsplit=1)[0].rstrip('.')
  return first.split(':')[0] if len(first) > 120 else first


def growth_exponent(lengths: list[float], values: list[float]) -> float:
  """Least-squares slope of log(value) against log(length): ~1 linear, ~2 quadratic."""
  x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(values, float))
  return float(np.polyfit(x, y, 1)[0])
