"""Evaluate a trained run: restores parameters only (no optimizer state).

    python -m experiments.evaluate --workdir=/tmp/run --checkpoint=best --split=test

Prints one JSON object ``{"step", "split", <metric>: value, ...}`` on stdout. A damaged
``best``/``latest`` checkpoint (checksum mismatch, unreadable, NaN/Inf parameters) falls
back to the next good one with one warning line; a damaged explicit step is an error.

Exit codes: 0 done; 1 a user mistake (no checkpoint, unknown split or step; one line on
stderr); 3 an environment failure (no usable checkpoint, unreadable files); 4 an internal
error. For 3 and 4 the line names the log with the full traceback
(<workdir>/errors.log).
"""

from __future__ import annotations

import json

from absl import app
from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by train.py.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', 'best, latest or a step number.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to evaluate.')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Eval batch size (0 = the run\'s).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Override the run\'s data_dir.')


def evaluate(workdir: str, checkpoint: str, split: str, batch_size: int = 0,
             data_dir: str | None = None) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from seqjax.training import loop, mesh as mesh_lib, tasks  # pylint: disable=g-import-not-at-top
  from seqjax.training.errors import UserError  # pylint: disable=g-import-not-at-top
  from seqjax.training.steps import make_eval_step  # pylint: disable=g-import-not-at-top
  model, model_cfg, params, meta, step = loop.load_for_inference(workdir, checkpoint)
  config = ml_collections.ConfigDict(meta['config'])
  if data_dir is not None:
    config.data_dir = data_dir
  task = tasks.open_task(config, meta['task']['metadata'])  # the run's own tokenizer
  if split not in task.spec.splits:
    raise UserError(f'--split={split!r} is not a split of task {task.spec.name!r}; '
                     f'choose one of {list(task.spec.splits)}')
  mesh = mesh_lib.make_mesh(1)
  eval_step = jax.jit(make_eval_step(model, task.spec.kind, model_cfg.num_classes))
  bs = batch_size or config.eval_batch_size or config.batch_size
  metrics = tasks.evaluate_params(eval_step, params, task, split, bs,
                                 mesh_lib.batch_sharding(mesh))
  return {'step': step, 'split': split, **metrics}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  result = evaluate(_WORKDIR.value, _CHECKPOINT.value, _SPLIT.value, _BATCH.value,
                    _DATA_DIR.value)
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main, workdir_flag='workdir')
