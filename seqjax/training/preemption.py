"""SIGTERM (pre-emption) handling: the one place that decides when a run stops.

A cluster scheduler sends SIGTERM, waits a grace period, then SIGKILLs. The handler never
exits by itself; it records the request, and what happens next depends on the phase:

* inside ``interruptible()`` (dataset preparation, checkpoint restore, the final test
  evaluation: phases that write nothing of ours) it raises ``Preempted`` at once, so the
  command ends promptly with nothing half-written (TFDS removes its temporary directory);
* everywhere else (the training loop, file writes) it only sets ``requested``; the loop
  polls ``should_stop(step)`` at every step boundary, saves that step unless it is saved
  already, and returns — at most the step in flight is lost.

On one host the flag is the whole story. In a multi-process job every process has to join
the same final save, so they must agree on the step: ``jax.distributed.initialize``
installs JAX's pre-emption notifier, which takes over SIGTERM (this module's handler no
longer runs) and tells the coordinator; ``use_sync`` then makes ``should_stop`` ask
JAX's pre-emption sync point (``multihost_utils.reached_preemption_sync_point``), which
turns true at the same step on every process once any of them got SIGTERM (the largest
step any process had reached, plus one). Before the training loop (data preparation,
restore) a multi-process job therefore does not stop at once: it stops at its first step
boundary, saving nothing new.

Entry points call ``install()`` before their heavy imports, so a SIGTERM during start-up
is recorded too (instead of Python's default: death by signal, exit code 143);
``experiments/train.py`` records one even earlier, with a minimal handler set by its
first statement, and passes that record to ``install(early=...)``. A request recorded
before ``main`` runs ends the command with the "nothing was saved" line
(``experiments.cli``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Sequence

from seqjax.training.errors import Preempted


class Preemption:
  """Process-wide pre-emption state (signal handlers are process-wide too)."""

  def __init__(self):
    self.requested = False
    self._interruptible = 0
    self._installed = False
    self._sync = None  # multi-process: step -> whether every process stops there

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    if self._interruptible:
      raise Preempted('SIGTERM')

  def install(self, early: Sequence[int] = ()) -> bool:
    """Routes SIGTERM here for the rest of the process (main thread only). ``early`` is
    the record of an entry point's first, minimal handler (a list it appends signals to);
    it is read after the switch, so a signal that lands during it is not lost."""
    if threading.current_thread() is not threading.main_thread():
      return False
    signal.signal(signal.SIGTERM, self._handle)
    self._installed = True
    if early:
      self.requested = True
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

  def use_sync(self, reached_sync_point) -> None:
    """Multi-process: ``should_stop(step)`` becomes ``reached_sync_point(step)``, which
    every process must call at every step boundary (``None``: back to the local flag)."""
    self._sync = reached_sync_point

  def should_stop(self, step: int) -> bool:
    """Whether the training loop stops at ``step`` (a step boundary)."""
    if self._sync is not None:
      # Never the local flag here: a process stopping alone would leave the others
      # waiting in the next collective.
      if self._sync(int(step)):
        self.requested = True
        return True
      return False
    return self.requested


PREEMPTION = Preemption()


def install(early: Sequence[int] = ()) -> bool:
  return PREEMPTION.install(early)
