"""A run's task and data, for the trainer and for every script that reads a run.

``open_task`` and ``open_split`` turn a bad task name, option or split into a one-line
``UserError``; ``saved_task_metadata`` reads the task metadata (the tokenizer) saved with a
run's newest readable checkpoint, so that evaluating or resuming reads the data with the
run's own vocabulary; ``evaluate_params`` gives the metrics of parameters over a split,
each process reading its own rows of every global batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from seqjax.data.errors import DataError
from seqjax.data.pipeline import make_eval_iterator
from seqjax.data.registry import get_task
from seqjax.training import losses, mesh as mesh_lib, resume
from seqjax.training.checkpointing import Checkpointer
from seqjax.training.errors import UserError

CHECKPOINT_DIR = 'checkpoints'  # under the workdir


def open_task(config, saved_metadata: dict[str, Any] | None = None):
  """The task of ``config``; a bad task name or option is a ``UserError``.
  ``saved_metadata`` (a run's saved ``task.metadata``) supplies the run's tokenizer, so
  resuming and evaluating read the data with the vocabulary the model was trained with
  instead of rebuilding one (slow for IMDB-sized data, and wrong if the data changed
  since)."""
  options = config.task_options.to_dict() if config.task_options else {}
  if saved_metadata and 'tokenizer' in saved_metadata:
    options['tokenizer'] = saved_metadata['tokenizer']
  try:
    return get_task(config.task, data_dir=config.data_dir or None, seed=config.seed,
                    **options)
  except (UserError, DataError):  # already one-line errors; callers may catch their kind
    raise
  except ValueError as err:
    raise UserError(str(err)) from None


def open_split(task, split: str):
  """``task.dataset(split)`` (prepares the data on first use); a bad split or option is a
  ``UserError``."""
  try:
    return task.dataset(split)
  except UserError:
    raise
  except ValueError as err:
    raise UserError(str(err)) from None


def saved_task_metadata(workdir: str) -> dict[str, Any] | None:
  """The task metadata (e.g. the tokenizer) saved with the newest readable checkpoint."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  ckpt = Checkpointer(directory, read_only=True)
  try:
    meta = resume.saved_meta(ckpt)
  finally:
    ckpt.close()
  return meta['task']['metadata'] if meta else None


def abstract_with(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def evaluate_params(eval_step, params, task, split: str, batch_size: int,
                    batch_sharding, max_batches: int = 0) -> dict[str, float]:
  """Metrics of ``params`` over ``split`` (or its first ``max_batches`` batches)."""
  index, count = mesh_lib.process_rows(batch_sharding, batch_size)
  it = make_eval_iterator(open_split(task, split), task.spec, batch_size=batch_size,
                          shard_index=index, shard_count=count)
  outs = []
  for i, batch in enumerate(it):
    if max_batches and i >= max_batches:
      break
    outs.append(eval_step(params, mesh_lib.global_batch(batch, batch_sharding)))
  sums = None
  for out in jax.device_get(outs):
    sums = losses.add_sums(sums, out)
  if sums is None:
    raise UserError(f'split {split!r} of task {task.spec.name!r} is empty')
  return losses.finalize(task.spec.kind, sums, task.spec.metrics)
