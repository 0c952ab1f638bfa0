r"""Train any seqjax model on any task.

    python -m experiments.train --config=experiments/configs/selective_copying.py \
        --config.model=mamba --config.model_cfg.d_model=128 --workdir=/tmp/run

Rerunning the same command with the same ``--workdir`` resumes from the newest good
checkpoint (a damaged one is moved aside with a warning; ``--config.restart=True`` starts
over). One trainer per workdir: a second one exits at once naming the first.

Exit codes: 0 done, or pre-empted by SIGTERM (the step reached is saved; rerun to
resume); 1 a user mistake (bad flag, config file, data or workdir; one line on stderr);
2 the loss or gradient norm became NaN/Inf (the newest checkpoint is kept); 3 an
environment failure (disk full, unwritable or locked workdir, damaged checkpoints); 4 an
internal error. For 3 and 4 the line names the log with the full traceback
(<workdir>/errors.log).
"""

from __future__ import annotations

import os

# First, before the slow imports: from here on SIGTERM is a clean stop, not exit code 143.
from seqjax.training import preemption  # pylint: disable=g-import-not-at-top

preemption.install()

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

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
  result = loop.train(_CONFIG.value, _WORKDIR.value)
  if 'preempted' in result:
    print(result['message'])


if __name__ == '__main__':
  cli.run(main, workdir_flag='workdir')
