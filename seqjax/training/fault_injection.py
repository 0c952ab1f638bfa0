"""Faults the trainer injects for its own tests, read from the environment.

They are not experiment-config fields: a user never sets them, and a saved config never
carries them. Unset (the normal case) means no fault.

* ``SEQJAX_TEST_NAN_AT_STEP=n``: poison the loss and gradients of update ``n`` (1-based,
  as logged) to exercise the NaN guard.
* ``SEQJAX_TEST_KILL_AT_STEP=n``: SIGKILL the process right after update ``n`` to
  simulate a crash (exact resume is then tested by rerunning).
* ``SEQJAX_TEST_TERM_AT_STEP=n``: SIGTERM the process right after update ``n`` (a
  pre-emption notice arriving mid-run).
* ``SEQJAX_TEST_FAULT_PROCESS=i``: in a multi-process job, only process ``i`` kills or
  signals itself (all of them when unset), so the others must notice.
"""

from __future__ import annotations

import os

NAN_AT_STEP = 'SEQJAX_TEST_NAN_AT_STEP'
KILL_AT_STEP = 'SEQJAX_TEST_KILL_AT_STEP'
TERM_AT_STEP = 'SEQJAX_TEST_TERM_AT_STEP'
FAULT_PROCESS = 'SEQJAX_TEST_FAULT_PROCESS'


def _step(variable: str) -> int:
  value = os.environ.get(variable, '').strip()
  return int(value) if value else -1


def nan_at_step() -> int:
  """The update whose loss becomes NaN, or -1."""
  return _step(NAN_AT_STEP)


def _this_process() -> bool:
  chosen = _step(FAULT_PROCESS)
  if chosen < 0:
    return True
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == chosen


def kill_at_step() -> int:
  """The update after which this process kills itself, or -1."""
  return _step(KILL_AT_STEP) if _this_process() else -1


def term_at_step() -> int:
  """The update after which this process sends itself SIGTERM, or -1."""
  return _step(TERM_AT_STEP) if _this_process() else -1
