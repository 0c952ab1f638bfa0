"""Train any seqjax model on any task.

    python experiments/train.py --config=experiments/configs/selective_copying.py \
        --config.model=mamba --config.model_cfg.d_model=128 --workdir=/tmp/run

Rerunning the same command with the same ``--workdir`` resumes from the newest checkpoint.
Exit codes: 0 done (or pre-empted by SIGTERM after saving: rerun to resume); 1 a user
error (one line on stderr, no traceback); 2 the loss became NaN/Inf (the message names the
step; the last good checkpoint is kept).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from experiments import cli

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
_CONFIG = cli.define_config(
    os.path.join(_CONFIGS, 'default.py'),
    'Experiment config file, one per task in experiments/configs/: ' + ', '.join(sorted(
        f[:-3] for f in os.listdir(_CONFIGS)
        if f.endswith('.py') and f[0] != '_' and f not in ('base.py', 'lra_settings.py')))
    + '. Override any field with --config.<field>=<value>, e.g. '
    '--config.task_options.path=my.txt --config.model=mamba '
    '--config.model_cfg.d_model=128 (README: "Train on your own data").')
# The flag is defined inside ml_collections; make it one of this program's own so that
# --help (not only --helpfull) shows it.
flags.declare_key_flag('config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    cli.fail('--workdir is required (the directory for checkpoints and metrics)')
  from seqjax.training import loop  # pylint: disable=g-import-not-at-top
  from seqjax.training.errors import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  try:
    result = cli.run_user_errors(loop.train, _CONFIG.value, _WORKDIR.value)
  except NonFiniteLossError as err:
    logging.error('%s', err)
    print(f'error: {err}', file=sys.stderr)
    sys.exit(2)
  if 'preempted' in result:
    print(f'pre-empted: saved step {result["preempted"]}; rerun to resume')


if __name__ == '__main__':
  cli.run(main)
