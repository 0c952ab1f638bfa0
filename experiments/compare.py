r"""Measures the classic LSTM-vs-Transformer claims (and the SSM ones) and writes a report.

  python -m experiments.compare --suite=quick --outdir=outputs/compare      # preview
  python -m experiments.compare --suite=standard --outdir=outputs/standard  # to cite
  python -m experiments.compare --only=memory --families=lstm,transformer
  python -m experiments.compare --only=realtext --text_csv=reviews.csv

Writes ``report.md`` (claim, prediction, measurement, verdict per experiment, then the
published results it reproduces or not), PNG plots, ``results.json`` (every seed's value)
and one CSV per experiment into ``--outdir``. The report is rewritten after every
experiment, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

from absl import app, flags, logging

from experiments import cli
from experiments.comparison import (interpret, longrange, memory, order, positions,
                                    published, realtext, scale, speed, streaming)
from experiments.comparison.report import environment, headline, protocol, write_report
from experiments.comparison.suite import COMPARABLE, FAMILIES, SUITES
from seqjax.data.errors import DataError
from seqjax.training.errors import UserError

# In report order: the rows of the article's table (sections 1-8).
EXPERIMENTS = {'speed': speed.run, 'memory': memory.run, 'streaming': streaming.run,
               'longrange': longrange.run, 'order': order.run, 'positions': positions.run,
               'interpret': interpret.run, 'scale': scale.run, 'realtext': realtext.run}

_SUITE = flags.DEFINE_enum('suite', 'quick', list(SUITES),
                           'Problem sizes and budgets: quick (a preview, 19 min on a 2-core '
                           'CPU), standard (the one to cite: 3 seeds, a learning-'
                           'rate grid, training to criterion; 55 min on a 2-core CPU), '
                           'full (the papers\' lengths, 5 seeds; accelerators), smoke '
                           '(seconds; for tests).')
_FAMILIES = flags.DEFINE_list('families', list(FAMILIES),
                              f'Families to compare, from {list(COMPARABLE)}.')
_ONLY = flags.DEFINE_list('only', list(EXPERIMENTS),
                          f'Experiments to run (each also runs alone), from '
                          f'{list(EXPERIMENTS)}.')
_OUTDIR = flags.DEFINE_string('outdir', 'outputs/compare', 'Where the report goes.')
_SEED = flags.DEFINE_integer('seed', 0, 'First random seed (models and data); a trained '
                             'cell uses seeds seed, seed+1, ...')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Seeds per trained cell (default: the '
                              'suite\'s: quick 2, standard 3, full 5).', lower_bound=1)
_MAX_STEPS = flags.DEFINE_integer('max_steps', 0, 'Cap every training budget at this many '
                                  'steps (0 = the suite\'s), to try a suite end to end on '
                                  'small hardware; the report records the cap.',
                                  lower_bound=0)
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', 0, 'Cap the synthetic training, '
                                     'validation and test splits at this many examples (0 = the '
                                     'suite\'s).', lower_bound=0)
_MAX_PARAMS = flags.DEFINE_integer('max_params', 0, 'Cap every matched parameter target '
                                   '(the suite\'s, each experiment\'s, the scale ladder) '
                                   'and long-range\'s fixed widths at this many parameters '
                                   '(0 = none), to try a big suite on small hardware; the '
                                   'report records the cap.', lower_bound=0)
_WORKERS = flags.DEFINE_integer('workers', None, 'Processes that train cells side by side '
                                '(default: one per CPU core on CPU, up to 4; on an '
                                'accelerator, none). 0 trains in this process, for '
                                'debugging (on CPU its last bits differ from the '
                                'workers\', which compute with one thread each). Timing '
                                'experiments always run alone.', lower_bound=0)
_TEXT_CSV = flags.DEFINE_string('text_csv', None,
                                'Real-text experiment: your own CSV/TSV of (text, label) '
                                'rows, used when IMDB/SST-2 are not prepared in TFDS.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  for name, values, valid in (('--families', _FAMILIES.value, COMPARABLE),
                              ('--only', _ONLY.value, list(EXPERIMENTS))):
    unknown = sorted(set(values) - set(valid))
    if unknown or not values:
      cli.fail(f'{name}: unknown {unknown or "(empty)"}; choose from {list(valid)}')
  if _TEXT_CSV.value and not os.path.isfile(_TEXT_CSV.value):
    cli.fail(f'--text_csv={_TEXT_CSV.value}: no such file; pass a CSV/TSV of (text, '
             'label) rows')
  suite = SUITES[_SUITE.value]
  suite = dataclasses.replace(suite, seeds=_SEEDS.value or suite.seeds,
                              workers=suite.workers if _WORKERS.value is None else _WORKERS.value,
                              first_seed=_SEED.value, max_steps=_MAX_STEPS.value,
                              max_examples=_MAX_EXAMPLES.value,
                              max_params=_MAX_PARAMS.value)
  if suite.max_params:  # the timing rows' models are matched to the suite's own target
    suite = dataclasses.replace(suite, target_params=min(suite.target_params,
                                                         suite.max_params))
  if suite.capped:  # a capped run can only preview its suite
    suite = dataclasses.replace(suite, preview=True)
  families = list(_FAMILIES.value)
  os.makedirs(_OUTDIR.value, exist_ok=True)
  env = environment(suite, _SEED.value, families)
  experiments = dict(EXPERIMENTS, realtext=functools.partial(realtext.run,
                                                             csv_path=_TEXT_CSV.value))
  findings = []
  for name in _ONLY.value:
    start = time.perf_counter()
    logging.info('experiment %s ...', name)
    try:
      finding = experiments[name](suite, families, _OUTDIR.value, _SEED.value)
    except (UserError, DataError) as err:  # bad data or settings: one line, no traceback
      cli.fail(f'experiment {name}: {str(err).strip().splitlines()[0]}')
    finding.seconds = time.perf_counter() - start
    findings.append(finding)
    # Rewritten after every experiment, so a long run that stops keeps what it measured.
    path = write_report(_OUTDIR.value, env, findings + [published.run(findings, suite.preview)],
                        protocol(suite))
    logging.info('experiment %s done in %.0f s: %s', name, finding.seconds,
                 headline(finding.verdict))
  print(f'report: {path}')


if __name__ == '__main__':
  cli.run(main)
