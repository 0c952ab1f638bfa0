"""Evaluate a trained run: restores parameters only (no optimizer state).

    python experiments/evaluate.py --workdir=/tmp/run --checkpoint=best --split=test

Prints one JSON object ``{"step", "split", <metric>: value, ...}`` on stdout. Exit code 1
with one line on stderr for a user mistake (no checkpoint, unknown split or step).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
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
  from seqjax.training import loop, mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from seqjax.training.steps import make_eval_step  # pylint: disable=g-import-not-at-top
  model, model_cfg, params, meta, step = loop.load_for_inference(workdir, checkpoint)
  config = ml_collections.ConfigDict(meta['config'])
  if data_dir is not None:
    config.data_dir = data_dir
  task = loop.open_task(config, meta['task']['metadata'])  # the run's own tokenizer
  if split not in task.spec.splits:
    raise ValueError(f'--split={split!r} is not a split of task {task.spec.name!r}; '
                     f'choose one of {list(task.spec.splits)}')
  mesh = mesh_lib.make_mesh(1)
  eval_step = jax.jit(make_eval_step(model, task.spec.kind, model_cfg.num_classes))
  bs = batch_size or config.eval_batch_size or config.batch_size
  metrics = loop.evaluate_params(eval_step, params, task, split, bs,
                                 mesh_lib.batch_sharding(mesh))
  return {'step': step, 'split': split, **metrics}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  result = cli.run_user_errors(evaluate, _WORKDIR.value, _CHECKPOINT.value, _SPLIT.value,
                               _BATCH.value, _DATA_DIR.value)
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main)
