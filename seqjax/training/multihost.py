"""Multi-process (multi-host) runs: joining the job, and what its processes must agree on.

``initialize(config)`` joins a job of several processes (one per host, or several on one
machine with ``experiments.launch``) with ``jax.distributed.initialize``. Where the
cluster is one JAX detects (SLURM, Open MPI, Cloud TPU, Kubernetes/GKE) nothing needs
setting; elsewhere each process is told the coordinator (process 0's ``host:port``), the
number of processes and its own id, by ``--config.coordinator_address`` /
``--config.num_processes`` / ``--config.process_id`` or by the environment variables
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` (a config field
wins over its variable). Heartbeat and shutdown timeouts are the config's
(``distributed_heartbeat_timeout``, ``distributed_shutdown_timeout``) instead of JAX's
100 s / 300 s, so a dead peer is noticed in well under a minute; before that, seqjax's
liveness thread (``_Liveness``) names a stopped process within ``_QUIET_S`` = 10 s and
stops this one with one line (keep ``distributed_heartbeat_timeout`` above 10 s, or JAX's
abort with a stack dump comes first).

Agreement goes through the coordinator's key-value store (plain strings, no device
collective, so it also works before a mesh exists and never compiles anything):

* ``lead_first(name, fn)``: process 0 runs ``fn`` (e.g. dataset preparation into a
  shared ``data_dir``) while the others wait; then they run ``fn`` themselves (opening
  what process 0 wrote). If process 0 fails, every process fails with process 0's
  one-line reason and exit code, instead of waiting forever.
* ``lead_only(name, fn)``: process 0 runs ``fn`` (moving or deleting checkpoint files),
  the others wait for it.
* ``gather_json(name, obj)``: process 0 receives every process's JSON value (the
  per-process data-iterator states saved in a checkpoint).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils

from seqjax.training import fatal_filter
from seqjax.training.errors import EnvironmentFailure, UserError
from seqjax.training.preemption import PREEMPTION

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
       'num_processes': 'JAX_NUM_PROCESSES', 'process_id': 'JAX_PROCESS_ID'}
_POLL_MS = 500  # how often a waiting process looks for SIGTERM (see lead_first)
# Liveness (see _Liveness): each process bumps its counter this often and reads everyone's;
# a counter that has not moved for _QUIET_S names its process as stopped. _QUIET_S stays
# under the coordination service's heartbeat timeout (20 s here), after which JAX itself
# aborts the survivors with a fatal log and a stack dump: seqjax's one line comes first.
_BEAT_S = 1.0
_QUIET_S = 10.0
_ALIVE = 'seqjax/alive/'
_DONE = 'done'

_STATE: dict[str, Any] = {'initialized': False, 'counter': 0}


class PeerFailure(EnvironmentFailure):
  """Another process of the job failed; the message names it and its reason."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def cluster_settings(config, environ=None) -> dict[str, Any]:
  """``{'coordinator_address', 'num_processes', 'process_id'}`` from the config's fields,
  else the ``JAX_*`` environment variables, else ``None`` (JAX's auto-detection).
  ``UserError`` for a value that cannot be right."""
  environ = os.environ if environ is None else environ
  out: dict[str, Any] = {}
  for name, var in ENV.items():
    value = config.get(name)
    source = f'config.{name}'
    if value in (None, '', -1) or (name == 'num_processes' and value == 0):
      value, source = environ.get(var) or None, var
    if value is not None and name != 'coordinator_address':
      try:
        value = int(value)
      except (TypeError, ValueError):
        raise UserError(f'{source}={value!r} must be an integer') from None
    out[name] = value
  n, i = out['num_processes'], out['process_id']
  if n is not None and n < 1:
    raise UserError(f'num_processes={n} must be at least 1')
  if i is not None and (i < 0 or (n is not None and i >= n)):
    raise UserError(f'process_id={i} must be in [0, num_processes={n})')
  address = out['coordinator_address']
  if address is not None and ':' not in address:
    raise UserError(f'coordinator_address={address!r} needs a port: host:port (process '
                    "0's host, a free port)")
  return out


def check_fields(config) -> None:
  """The explicit cluster fields only mean something with ``multihost=True``."""
  if config.get('multihost', False):
    return
  for name in ENV:
    value = config.get(name)
    if value not in (None, '', -1, 0):
      raise UserError(f'config.{name}={value!r} is set but config.multihost=False; add '
                      '--config.multihost=True to join a multi-process job')


def initialize(config) -> None:
  """Joins the multi-process job when ``config.multihost`` (once per process). Must run
  before anything touches a JAX backend (even ``jax.process_count()``)."""
  check_fields(config)
  if not config.get('multihost', False) or _STATE['initialized']:
    return
  settings = cluster_settings(config)
  _filter_stderr()
  try:
    jax.distributed.initialize(
        **settings,
        initialization_timeout=int(config.get('distributed_init_timeout', 300)),
        heartbeat_timeout_seconds=int(config.get('distributed_heartbeat_timeout', 20)),
        shutdown_timeout_seconds=int(config.get('distributed_shutdown_timeout', 30)))
  except ValueError as err:  # JAX: nothing detected and not enough given
    missing = [f'--config.{k} (or {ENV[k]})' for k, v in settings.items() if v is None]
    raise UserError(
        f'config.multihost=True but no cluster was detected ({err}); set '
        f'{", ".join(missing) or "the cluster fields"}, or start the processes with '
        'python -m experiments.launch') from None
  except Exception as err:  # pylint: disable=broad-except
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise EnvironmentFailure(
        f'could not join the multi-process job at '
        f'{settings["coordinator_address"] or "the detected coordinator"}: {first[:300]}'
    ) from None
  _STATE['initialized'] = True
  if jax.process_count() > 1:
    PREEMPTION.use_sync(multihost_utils.reached_preemption_sync_point)
    _STATE['liveness'] = _Liveness(_client(), jax.process_index(), jax.process_count())


def _filter_stderr() -> None:
  """Routes this process's stderr (fd 2: Python's and the C++ libraries' output) through
  ``fatal_filter.py``, which turns JAX's abort on a lost coordinator into one line, and
  turns off core files, which that abort would otherwise leave on every surviving host
  where the limit allows them. Both off with ``SEQJAX_RAW_STDERR=1``."""
  if os.environ.get('SEQJAX_RAW_STDERR', '') not in ('', '0'):
    return
  resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
  sys.stderr.flush()
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fatal_filter.py')
  # Inherits the real stderr as its own fd 2; the pipe's write end becomes ours.
  copier = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE)
  os.dup2(copier.stdin.fileno(), 2)
  copier.stdin.close()  # fd 2 now holds the only write end: EOF when this process ends
  _STATE['stderr_copier'] = copier  # kept referenced: no "still running" warning at exit


class _Liveness:
  """Notices a process of the job that stopped, and stops this one with one line naming
  it, before JAX's heartbeat timeout aborts it with a stack dump.

  A daemon thread bumps ``seqjax/alive/<this process>`` in the coordinator's key-value
  store every ``_BEAT_S`` and reads every process's counter (one directory read). A
  counter that has not moved for ``_QUIET_S`` means its process is gone (killed, or its
  host lost): the thread prints ``error: process i of n stopped ...`` and exits this
  process with code 3. That also ends a process that would otherwise wait forever, e.g.
  in a collective whose connections the dead process never opened. A process that ends
  normally marks its counter done at exit, so the others do not report it. (Process 0
  hosts the coordinator: when it dies, JAX aborts the others at once, before this can
  speak, and ``fatal_filter.py`` turns that abort into the one line.) Cost: per process
  one write and one read of ``n`` short keys per second at the coordinator.
  """

  def __init__(self, client, index: int, count: int):
    self.client, self.index, self.count = client, index, count
    self.stop = threading.Event()
    self.reporting = threading.Lock()  # held by whoever reports a stopped process
    start = time.monotonic()
    self.seen: dict[int, tuple[str | None, float]] = {i: (None, start) for i in range(count)}
    self.thread = threading.Thread(target=self._run, name='seqjax-liveness', daemon=True)
    self.thread.start()
    atexit.register(self.close)  # runs before JAX's shutdown (registered at import)

  def _run(self) -> None:
    beats = 0
    while not self.stop.wait(_BEAT_S):
      try:
        self.client.key_value_set(f'{_ALIVE}{self.index}', str(beats), allow_overwrite=True)
        beats += 1
        now = time.monotonic()
        for key, value in self.client.key_value_dir_get(_ALIVE):
          i = key.rsplit('/', 1)[1]
          i = int(i) if i.isdigit() else -1
          if i in self.seen and self.seen[i][0] != value:
            self.seen[i] = (value, now)
      except Exception:  # pylint: disable=broad-except
        continue  # the coordinator is gone or shutting down; JAX reports that itself
      gone = self.stopped()
      if gone and self.reporting.acquire(blocking=False):
        print(f'error: {_gone_line(gone, self.count)}', file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)  # pylint: disable=protected-access

  def stopped(self) -> list[int]:
    """The other processes whose counter has not moved for ``_QUIET_S``."""
    now = time.monotonic()
    return [i for i, (value, changed) in self.seen.items()
            if i != self.index and value != _DONE and now - changed > _QUIET_S]

  def close(self) -> None:
    self.stop.set()
    self.thread.join(timeout=2 * _BEAT_S)
    try:
      self.client.key_value_set(f'{_ALIVE}{self.index}', _DONE, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass


def _gone_line(gone: list[int], count: int, reason: str = '') -> str:
  who = (f'process{"es" if len(gone) > 1 else ""} {", ".join(map(str, gone))} of {count}'
         if gone else f'another of the {count} processes')
  why = f' ({reason})' if reason else ''
  return f'{who} stopped, so this one stops too{why}; {fatal_filter.RESUME}'


# How a collective or the coordinator reports a process that went away (gloo's TCP pairs,
# the coordination service's gRPC status).
_PEER_LOSS = ('Gloo', 'Connection reset by peer', 'Connection closed by peer',
              'Socket closed', 'stopped sending heartbeats', 'UNAVAILABLE')


def is_peer_loss(err: BaseException) -> bool:
  """Whether ``err`` says that another process of the job is gone."""
  text = str(err)
  return jax.process_count() > 1 and any(s in text for s in _PEER_LOSS)


def peer_failure(err: BaseException) -> PeerFailure:
  """The one-line error for a lost peer, naming it once the liveness thread sees which
  counter stopped (up to ``_QUIET_S``). Not by ``get_live_nodes``: that call waits for
  every live process, i.e. until the dead one's heartbeat timeout, when JAX aborts this
  process with a stack dump instead."""
  first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
  liveness = _STATE.get('liveness')
  gone: list[int] = []
  if liveness is not None:
    if not liveness.reporting.acquire(blocking=False):
      time.sleep(3600)  # the liveness thread is already reporting; it exits the process
    deadline = time.monotonic() + _QUIET_S + 2 * _BEAT_S
    while not gone and time.monotonic() < deadline:
      time.sleep(_BEAT_S / 2)
      gone = liveness.stopped()
  return PeerFailure(_gone_line(gone, jax.process_count(), first[:160]), 3)


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  if client is None:
    raise RuntimeError('jax.distributed is not initialized')
  return client


def _next_key(name: str) -> str:
  # Every process calls the agreement functions in the same order, so a counter makes
  # each call's keys unique (a resumed run starts a fresh job: fresh keys).
  _STATE['counter'] += 1
  return f'seqjax/{_STATE["counter"]}/{name}'


def _wait_for(key: str, what: str, timeout: float, interrupt: Callable[[], None]) -> str:
  """The value of ``key`` once some process sets it; polls so that ``interrupt`` (e.g.
  the SIGTERM check) runs between waits."""
  client = _client()
  deadline = time.monotonic() + timeout
  while True:
    interrupt()
    try:
      return client.blocking_key_value_get(key, _POLL_MS)
    except Exception as err:  # pylint: disable=broad-except
      text = str(err)
      if 'DEADLINE_EXCEEDED' not in text and 'Deadline' not in text:
        raise EnvironmentFailure(f'lost the multi-process job while waiting for {what}: '
                                 f'{text.strip().splitlines()[0][:200]}') from None
    if time.monotonic() > deadline:
      raise EnvironmentFailure(f'waited {timeout:g} s for {what}; giving up')


def _lead_then_publish(key: str, fn: Callable[[], Any]) -> Any:
  try:
    result = fn()
  except BaseException as err:
    code = getattr(err, 'exit_code', 4)
    text = str(err).strip().splitlines()
    _client().key_value_set(key, json.dumps(
        {'code': code, 'line': text[0] if text else type(err).__name__}))
    raise
  _client().key_value_set(key, json.dumps({'code': 0}))
  return result


def _await_lead(key: str, what: str, timeout: float, interrupt: Callable[[], None]) -> None:
  status = json.loads(_wait_for(key, f'process 0 ({what})', timeout, interrupt))
  if status['code']:
    raise PeerFailure(f'process 0 failed ({what}): {status["line"]}', status['code'])


def lead_first(name: str, fn: Callable[[], Any], *, what: str, timeout: float = 86400.0,
               interrupt: Callable[[], None] = lambda: None) -> Any:
  """``fn()`` on process 0 first, then on the others (see the module docstring)."""
  if jax.process_count() == 1:
    return fn()
  key = _next_key(name)
  if jax.process_index() == 0:
    return _lead_then_publish(key, fn)
  _await_lead(key, what, timeout, interrupt)
  return fn()


def lead_only(name: str, fn: Callable[[], Any], *, what: str,
              timeout: float = 3600.0) -> Any:
  """``fn()`` on process 0 only (e.g. moving files every process sees); the others wait
  until it is done and get ``None``, or fail with its reason."""
  if jax.process_count() == 1:
    return fn()
  key = _next_key(name)
  if jax.process_index() == 0:
    return _lead_then_publish(key, fn)
  _await_lead(key, what, timeout, lambda: None)
  return None


def gather_json(name: str, obj: Any, timeout: float = 600.0) -> list[Any] | None:
  """Every process's ``obj`` in process order on process 0 (``None`` elsewhere)."""
  if jax.process_count() == 1:
    return [obj]
  key = _next_key(name)
  client = _client()
  client.key_value_set(f'{key}/{jax.process_index()}', json.dumps(obj))
  if jax.process_index() != 0:
    return None
  return [json.loads(_wait_for(f'{key}/{i}', f'process {i}', timeout, lambda: None))
          for i in range(jax.process_count())]
