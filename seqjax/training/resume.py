"""Where a run starts: the newest checkpoint that passes its checks, or step 0.

A damaged newest step (unreadable, checksum mismatch, NaN/Inf) is moved aside to
``<step>.corrupt`` and the previous good one used, with one warning line. When no step is
good the run stops with ``DamagedCheckpointError`` and changes nothing: it never starts
over by itself, only when ``config.restart`` asks. Steps that a killed run left beyond
the retention are deleted.
"""

from __future__ import annotations

from absl import logging

from seqjax.training import multihost
from seqjax.training.checkpointing import Checkpointer, fallback_warning
from seqjax.training.errors import DamagedCheckpointError
from seqjax.training.preemption import PREEMPTION


def saved_meta(ckpt: Checkpointer) -> dict | None:
  """The ``meta`` item of the newest step that has a readable one (unverified: callers
  use it for the model's shape, which the verified restore then checks)."""
  for step in reversed(ckpt.all_steps()):
    try:
      return ckpt.restore_meta(step)
    except Exception:  # pylint: disable=broad-except
      continue  # the verified restore reports damaged steps
  return None


def restore_or_start(ckpt: Checkpointer, config, abstract_params, abstract_opt):
  """``(step, items)`` of the newest good checkpoint, or ``(0, None)`` for a fresh start.

  Damaged newer steps are moved aside with one warning line; when every step is damaged
  the run stops (the workdir untouched) unless ``config.restart`` asks to start over.
  """
  steps = ckpt.all_steps()
  if steps and config.get('restart', False):
    # Files every process sees are moved by process 0 alone (here and below).
    removed = multihost.lead_only('restart', ckpt.remove_all, what='deleting checkpoints')
    ckpt.manager.reload()
    logging.warning('restart=True: deleting checkpoints %s in %s and starting from step 0',
                    removed or steps, ckpt.directory)
    return 0, None
  if not steps:
    return 0, None
  with PREEMPTION.interruptible():
    try:
      step, items, refused = ckpt.restore_first_good(steps[::-1], abstract_params,
                                                     abstract_opt)
    except DamagedCheckpointError as err:
      raise DamagedCheckpointError(
          f'{err}. Nothing was changed: restore the files, or rerun with '
          '--config.restart=True to start over') from err
  if refused:
    kept = multihost.lead_only('quarantine', lambda: ckpt.quarantine([s for s, _ in refused]),
                               what='moving damaged checkpoints aside')
    ckpt.manager.reload()
    kept = kept or 'moved aside by process 0'
    fallback_warning(ckpt.directory, refused, step, 'resuming from', kept)
  pruned = ckpt.prune()
  if pruned:
    logging.warning('deleted checkpoint steps %s in %s, left beyond keep_checkpoints=%d by '
                    'an interrupted run', pruned, ckpt.directory, ckpt.keep)
  return step, items


def data_states(states: list[dict] | None) -> dict:
  """The checkpoint's ``data`` item from every process's iterator state (process order;
  ``None`` on processes other than 0, whose copy Orbax does not write). The positions
  must agree: the processes read rows of the same global batches."""
  if states is None:
    return {'processes': []}
  positions = {(s['epoch'], s['batch']) for s in states}
  if len(positions) > 1:
    raise RuntimeError(f'the processes\' data streams are out of step: (epoch, batch) '
                       f'{[(s["epoch"], s["batch"]) for s in states]}')
  return {'processes': states}


def data_state_of_process(saved: dict, index: int) -> dict:
  """Process ``index``'s iterator state from a checkpoint's ``data`` item. A run resumed
  on another number of processes takes any of them: the position is global
  (``seqjax.data.pipeline``). A checkpoint of an older version holds one bare state."""
  if 'processes' not in saved:
    return saved
  states = saved['processes']
  if not states:
    raise ValueError('the checkpoint holds no data-iterator state')
  return states[index] if index < len(states) else states[0]
