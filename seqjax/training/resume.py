"""Where a run starts: the newest checkpoint that passes its checks, or step 0.

A damaged newest step (unreadable, checksum mismatch, NaN/Inf) is moved aside to
``<step>.corrupt`` and the previous good one used, with one warning line. When no step is
good the run stops with ``DamagedCheckpointError`` and changes nothing: it never starts
over by itself, only when ``config.restart`` asks. Steps that a killed run left beyond
the retention are deleted.
"""

from __future__ import annotations

from absl import logging

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
    logging.warning('restart=True: deleting checkpoints %s in %s and starting from step 0',
                    ckpt.remove_all(), ckpt.directory)
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
    kept = ckpt.quarantine([s for s, _ in refused])
    fallback_warning(ckpt.directory, refused, step, 'resuming from', kept)
  pruned = ckpt.prune()
  if pruned:
    logging.warning('deleted checkpoint steps %s in %s, left beyond keep_checkpoints=%d by '
                    'an interrupted run', pruned, ckpt.directory, ckpt.keep)
  return step, items
