r"""Train any seqjax model on any task.

    python -m experiments.train --config=experiments/configs/selective_copying.py \
        --config.model=mamba --config.model_cfg.d_model=128 --workdir=/tmp/run

Rerunning the same command with the same ``--workdir`` resumes from the newest good
checkpoint (a damaged one is moved aside with a warning; ``--config.restart=True`` starts
over). One trainer per workdir: a second one exits at once naming the first.

Exit codes: 0 done, or pre-empted by SIGTERM (the step reached is saved; rerun to
resume; before the first step nothing is saved and the line says so; this holds from
the moment this module starts: only the interpreter's own start-up before it, about
0.1 s, longer on a loaded machine, still dies with 143); 1 a user mistake (bad flag,
config file, data or workdir; one line on stderr); 2 the loss or gradient norm became
NaN/Inf (the newest checkpoint is kept); 3 an environment failure (disk full, unwritable
workdir, damaged checkpoints, a dead peer, or a workdir locked by another trainer); 4 an
internal error. For 3 and 4 the line names the log with the full traceback
(<workdir>/errors.log), except for a locked workdir: that line names the trainer holding
it, and nothing is written into its workdir.
"""

from __future__ import annotations

import signal

# The first statement that runs: a SIGTERM from here on is recorded (by this one-line
# handler, before even seqjax is imported) instead of killing the process with exit code
# 143; ``preemption.install`` takes the record over. Only the interpreter's own start-up
# before this module runs (about 0.1 s; 0.1-0.8 s measured on a loaded machine, mostly
# ``site`` and the editable install's import hook) remains a window where SIGTERM kills
# with 143.
_EARLY_SIGTERM: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGTERM.append(signum))

import os  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

from seqjax.training import preemption  # pylint: disable=g-import-not-at-top

preemption.install(early=_EARLY_SIGTERM)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from experiments import cli, config_files

# Before the config file is loaded (it imports JAX and the model code: seconds): a SIGTERM
# that already arrived, or a workdir another trainer holds, ends the command here, within
# a second.
cli.exit_if_preempted()
cli.exit_if_workdir_locked(sys.argv, 'workdir')

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
_CONFIG = config_files.define_config(
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
