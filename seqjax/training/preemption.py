"""SIGTERM (pre-emption) handling: the one place that decides when a run stops.

A cluster scheduler sends SIGTERM, waits a grace period, then SIGKILLs. The handler never
exits by itself; it records the request, and what happens next depends on the phase:

* inside ``interruptible()`` (dataset preparation, checkpoint restore, the final test
  evaluation: phases that write nothing of ours) it raises ``Preempted`` at once, so the
  command ends promptly with nothing half-written (TFDS removes its temporary directory);
* everywhere else (the training loop, file writes) it only sets ``requested``; the loop
  polls ``should_stop(step)`` at every step boundary, saves that step unless it is saved
  already, and returns — at most the step in flight is lost.

Orbax's ``reached_preemption`` needs ``jax.distributed``; this flag works on one host.
``should_stop`` is where a multi-host run must agree on the step to stop at (every process
has to join the same final save), so that agreement belongs there and nowhere else.

Entry points call ``install()`` before their heavy imports, so a SIGTERM during start-up
is recorded too (instead of Python's default: death by signal, exit code 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading

from seqjax.training.errors import Preempted


class Preemption:
  """Process-wide pre-emption state (signal handlers are process-wide too)."""

  def __init__(self):
    self.requested = False
    self._interruptible = 0
    self._installed = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    if self._interruptible:
      raise Preempted('SIGTERM')

  def install(self) -> bool:
    """Routes SIGTERM here for the rest of the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
      return False
    signal.signal(signal.SIGTERM, self._handle)
    self._installed = True
    return True

  @contextlib.contextmanager
  def handling(self):
    """SIGTERM routed here for the duration (a no-op when an entry point installed it for
    the whole process); the previous handler comes back afterwards."""
    if self._installed or threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = signal.signal(signal.SIGTERM, self._handle)
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)

  def check(self) -> None:
    """Raises ``Preempted`` if SIGTERM arrived."""
    if self.requested:
      raise Preempted('SIGTERM')

  @contextlib.contextmanager
  def interruptible(self):
    """A phase that SIGTERM may abort at once (it must write nothing that could be left
    half-written)."""
    self.check()
    self._interruptible += 1
    try:
      yield
    finally:
      self._interruptible -= 1

  def should_stop(self, step: int) -> bool:  # pylint: disable=unused-argument
    """Whether the training loop stops at ``step`` (a step boundary)."""
    return self.requested


PREEMPTION = Preemption()


def install() -> bool:
  return PREEMPTION.install()
