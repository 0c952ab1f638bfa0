"""Faults the trainer injects for its own tests, read from the environment.

They are not experiment-config fields: a user never sets them, and a saved config never
carries them. Unset (the normal case) means no fault.

* ``SEQJAX_TEST_NAN_AT_STEP=n``: poison the loss and gradients of update ``n`` (1-based,
  as logged) to exercise the NaN guard.
* ``SEQJAX_TEST_KILL_AT_STEP=n``: SIGKILL the process right after update ``n`` to
  simulate a crash (exact resume is then tested by rerunning).
"""

from __future__ import annotations

import os

NAN_AT_STEP = 'SEQJAX_TEST_NAN_AT_STEP'
KILL_AT_STEP = 'SEQJAX_TEST_KILL_AT_STEP'


def _step(variable: str) -> int:
  value = os.environ.get(variable, '').strip()
  return int(value) if value else -1


def nan_at_step() -> int:
  """The update whose loss becomes NaN, or -1."""
  return _step(NAN_AT_STEP)


def kill_at_step() -> int:
  """The update after which the process kills itself, or -1."""
  return _step(KILL_AT_STEP)
