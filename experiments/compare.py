r"""Measures the classic LSTM-vs-Transformer claims (and the SSM ones) and writes a report.

  python -m experiments.compare --suite=quick --outdir=/tmp/compare
  python -m experiments.compare --only=memory --families=lstm,transformer

Writes ``report.md`` (claim, prediction, measurement, verdict per experiment), PNG plots,
``results.json`` and one CSV per experiment into ``--outdir``.
"""

from __future__ import annotations

import os
import time

from absl import app, flags, logging

from experiments.comparison import longrange, memory, order, speed, streaming
from experiments.comparison.report import environment, headline, write_report
from experiments.comparison.suite import FAMILIES, SUITES

EXPERIMENTS = {'speed': speed.run, 'memory': memory.run, 'streaming': streaming.run,
               'longrange': longrange.run, 'order': order.run}

_SUITE = flags.DEFINE_enum('suite', 'quick', list(SUITES), 'Problem sizes and budgets.')
_FAMILIES = flags.DEFINE_list('families', list(FAMILIES), 'Families to compare.')
_ONLY = flags.DEFINE_list('only', list(EXPERIMENTS),
                          f'Experiments to run, from {list(EXPERIMENTS)}.')
_OUTDIR = flags.DEFINE_string('outdir', 'outputs/compare', 'Where the report goes.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed (models and data).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  for name, values, valid in (('--families', _FAMILIES.value, FAMILIES),
                              ('--only', _ONLY.value, list(EXPERIMENTS))):
    unknown = sorted(set(values) - set(valid))
    if unknown:
      raise app.UsageError(f'{name}: unknown {unknown}; choose from {list(valid)}')
  suite = SUITES[_SUITE.value]
  families = list(_FAMILIES.value)
  os.makedirs(_OUTDIR.value, exist_ok=True)
  env = environment(suite, _SEED.value, families)
  findings = []
  for name in _ONLY.value:
    start = time.perf_counter()
    logging.info('experiment %s ...', name)
    finding = EXPERIMENTS[name](suite, families, _OUTDIR.value, _SEED.value)
    finding.seconds = time.perf_counter() - start
    findings.append(finding)
    # Rewritten after every experiment, so a long run that stops keeps what it measured.
    path = write_report(_OUTDIR.value, env, findings)
    logging.info('experiment %s done in %.0f s: %s', name, finding.seconds,
                 headline(finding.verdict))
  print(f'report: {path}')


if __name__ == '__main__':
  app.run(main)
