"""One workdir, one writer: the writability check and the workdir lock.

``WorkdirLock`` holds an exclusive ``fcntl.flock`` on ``<workdir>/.lock`` for as long as a
trainer runs, and writes the holder (host, pid, start time) into the file. A second
trainer fails at once with ``EnvironmentFailure`` naming the holder. The kernel drops a
``flock`` when its process dies, so the lock of a killed trainer is free to take: the
file still names the dead holder, and the new trainer says it takes it over. The lock file
is never deleted (deleting it would let a third process lock a new file while the second
still waits on the old one); a clean exit only clears the holder line. On Linux ``flock``
also works over NFS (it is emulated with POSIX locks there).

Both checks run before any data is prepared, so an unusable workdir costs nothing, and
``check_not_locked`` lets ``experiments/train.py`` turn a second trainer away before it
even imports JAX.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from absl import logging

from seqjax.training.errors import EnvironmentFailure, WorkdirInUse

LOCK_FILE = '.lock'


def ensure_writable(workdir: str) -> None:
  """Creates ``workdir`` and proves a file can be written in it, or raises
  ``EnvironmentFailure`` naming the directory and the reason."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as err:
    reason = err.strerror or type(err).__name__
    raise EnvironmentFailure(
        f'workdir {workdir} is not writable ({reason}: {err.filename or workdir}); choose '
        'another --workdir or fix its permissions') from err


def _holder_text(info: dict) -> str:
  if not info.get('pid'):
    return 'a trainer that is starting up'
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.get('started', 0)))
  return f'pid {info.get("pid")} on host {info.get("host")} (since {started})'


def in_use(workdir: str, holder: dict) -> WorkdirInUse:
  return WorkdirInUse(
      f'workdir {workdir} is in use by another trainer, {_holder_text(holder)}; wait for '
      'it to finish, stop it, or use another --workdir')


def check_not_locked(workdir: str) -> None:
  """Raises ``WorkdirInUse`` if a live single-process trainer holds ``workdir``'s lock;
  changes nothing.

  For entry points, before their slow imports (the config alone imports JAX): a second
  trainer then stops in a second. Only a probe (the lock is free again when this
  returns); ``WorkdirLock`` still decides. It cannot know yet whether this process is
  one of a multi-process job, whose other processes find process 0's lock held; so it
  stops only when the holder recorded a job of one process, which no other trainer may
  join. A missing or unreadable lock file passes: the real checks report what is wrong
  with the workdir. (A trainer that takes the lock in the very microseconds the probe
  holds it is turned away as if the workdir were in use: of two trainers racing for one
  workdir, one must lose.)"""
  try:
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR)
  except OSError:
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    try:
      holder = json.loads(os.pread(fd, 4096, 0).decode('utf-8', 'replace') or '{}')
    except (OSError, ValueError):
      holder = {}
    if isinstance(holder, dict) and holder.get('processes') == 1:
      raise in_use(workdir, holder) from None
  except OSError:
    return
  finally:
    os.close(fd)  # also drops the probe's lock


class WorkdirLock:
  """An exclusive lock on ``workdir`` (a context manager)."""

  def __init__(self, workdir: str, processes: int = 1):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.processes = processes  # of the holder's job, for ``check_not_locked``
    self._fd = None

  def _read(self) -> dict:
    try:
      os.lseek(self._fd, 0, os.SEEK_SET)
      text = os.read(self._fd, 4096).decode('utf-8', 'replace')
      return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
      return {}

  def _write(self, text: str) -> None:
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, text.encode(), 0)
    os.fsync(self._fd)

  def acquire(self) -> None:
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._read()
      os.close(self._fd)
      self._fd = None
      raise in_use(os.path.dirname(self.path), holder) from None
    previous = self._read()
    if previous.get('pid'):
      logging.warning('taking over the lock of %s in %s: that trainer is no longer running',
                      _holder_text(previous), self.path)
    self._write(json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                            'started': time.time(), 'processes': self.processes}))

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      self._write('')
    except OSError:
      pass  # a full disk must not hide the error that brought us here
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
