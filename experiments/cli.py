"""Shared entry-point plumbing: every way a command can end is one line and an exit code.

The codes (``seqjax.training.errors``): 0 done or pre-empted; 1 a user mistake
(``UserError``, ``DataError``, a bad flag or config file); 2 NaN/Inf; 3 an environment
failure (``EnvironmentFailure``, any ``OSError``, device out of memory); 4 anything else,
an internal error. For 3 and 4 (except a workdir locked by another trainer, an expected
condition the line explains) the line names the log file that holds the traceback and
every warning and error logged before it (``<workdir>/errors.log``, or a file in the
temporary directory when the workdir cannot take it).

Library errors (Orbax's, TensorStore's, a background thread's) are kept off the console:
the command's own line says what failed, and the log file keeps their details.
"""

from __future__ import annotations

import collections
import logging as py_logging
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging

from seqjax.utils import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR_LOG = 'errors.log'

# Every command that runs through `run` takes it (seqjax/utils/host_memory.py says why).
HOST_MEMORY = flags.DEFINE_enum(
    'host_memory', 'reuse', host_memory.POLICIES,
    'Host allocator policy for XLA:CPU steps. reuse (default): computations run in the '
    'calling thread, whose heap keeps every freed buffer for the next step (long steps '
    'stop page-faulting their buffers in; 0.65x the step time of a Mamba LM at 2K '
    'tokens); keep: each thread\'s heap keeps freed blocks up to 32 MiB; system: the C '
    'library\'s settings.')


def fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def run_user_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """``fn(...)`` with any ``ValueError`` reported as a user mistake (for commands whose
  every ``ValueError`` is one, e.g. the comparison's argument checks)."""
  try:
    return fn(*args, **kwargs)
  except ValueError as err:
    text = str(err).strip().splitlines()
    fail(text[0] if text else type(err).__name__)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with mistakes reduced to one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    fail(f'{str(err).strip().splitlines()[0]} (see --helpfull)')
  except (AttributeError, KeyError, ValueError, OSError, ImportError) as err:
    fail(str(err).strip().splitlines()[0])
  return []


def exit_preempted() -> None:
  """The end of a command pre-empted before it saved anything: one line, exit code 0."""
  print('pre-empted before the first step: nothing was saved; rerun the same command to '
        'continue')
  sys.exit(0)


def exit_if_preempted() -> None:
  """``exit_preempted`` if SIGTERM already arrived; for entry points, before their slow
  imports (a later SIGTERM is checked again when ``main`` starts)."""
  from seqjax.training.preemption import PREEMPTION  # pylint: disable=g-import-not-at-top
  if PREEMPTION.requested:
    exit_preempted()


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last ``--name=value`` / ``--name value`` in ``argv`` (absl's rule: the last
  wins), without parsing the other flags."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def exit_if_workdir_locked(argv: list[str], workdir_flag: str) -> None:
  """Exit code 3 and one line naming the holder if a live single-process trainer holds
  the workdir of ``argv``; for entry points, before their slow imports. Writes nothing
  (the workdir is the other trainer's); the trainer's own lock still decides everything
  this probe lets through."""
  from seqjax.training import errors, workdir  # pylint: disable=g-import-not-at-top
  path = _flag_value(argv, workdir_flag)
  if not path:
    return
  try:
    workdir.check_not_locked(path)
  except errors.WorkdirInUse as err:
    print(f'error: {err}', file=sys.stderr)
    sys.exit(errors.EXIT_ENVIRONMENT)


# ----------------------------------------------------------------------------- failures


def _is_ours(pathname: str) -> bool:
  return pathname.startswith(REPO) and '/site-packages/' not in pathname


class _QuietLibraries(py_logging.Filter):
  """Console filter: no Orbax INFO chatter, no library warnings that come with every
  run (``NOISE``), and no library errors (the command reports the failure itself;
  ``_ErrorBuffer`` keeps them)."""

  NOISE = ('did not provide metrics', 'read_only=True', 'Given directory is read only',
           'Using custom data configuration',
           'Metadata file does not exist')  # a step whose deletion a kill interrupted

  def filter(self, record: py_logging.LogRecord) -> bool:
    if '/orbax/' in record.pathname and record.levelno < py_logging.WARNING:
      return False
    if not _is_ours(record.pathname) and any(n in str(record.msg) for n in self.NOISE):
      return False
    return record.levelno < py_logging.ERROR or _is_ours(record.pathname)


class _ErrorBuffer(py_logging.Handler):
  """The last warnings and errors of this process, formatted with their tracebacks, for
  the log file of a failed command."""

  def __init__(self, capacity: int = 500):
    super().__init__(level=py_logging.WARNING)
    self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
    self.setFormatter(py_logging.Formatter(
        '%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s'))

  def emit(self, record: py_logging.LogRecord) -> None:
    try:
      self.lines.append(self.format(record))
    except Exception:  # pylint: disable=broad-except
      pass

  def add(self, title: str, exc: tuple | None) -> None:
    text = ''.join(traceback.format_exception(*exc)) if exc and exc[0] else ''
    self.lines.append(f'{time.strftime("%Y-%m-%d %H:%M:%S")} {title}\n{text}'.rstrip())


_BUFFER = _ErrorBuffer()


def _capture_background_errors() -> None:
  """Errors of threads and of ``atexit``/``__del__`` code go to the buffer, not stderr."""
  py_logging.getLogger().addHandler(_BUFFER)

  def thread_hook(args):
    _BUFFER.add(f'exception in thread {getattr(args.thread, "name", "?")}',
                (args.exc_type, args.exc_value, args.exc_traceback))

  def unraisable_hook(unraisable):
    _BUFFER.add(f'{unraisable.err_msg or "exception ignored"}: {unraisable.object!r}',
                (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))

  threading.excepthook = thread_hook
  sys.unraisablehook = unraisable_hook


def write_error_log(workdir: str | None, err: BaseException) -> str:
  """Appends ``err``'s traceback, then the buffered warnings/errors, to the workdir's log
  (a temporary file if nothing can be written there); returns its path. The traceback
  comes first so that a nearly full disk still gets the part that matters."""
  parts = [f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} pid {os.getpid()} on '
           f'{socket.gethostname()}: {" ".join(sys.argv)}\n',
           ''.join(traceback.format_exception(type(err), err, err.__traceback__)),
           '---- warnings and errors logged before it:\n',
           *(line + '\n' for line in _BUFFER.lines)]
  targets = [os.path.join(workdir, ERROR_LOG)] if workdir and os.path.isdir(workdir) else []
  targets.append(os.path.join(tempfile.gettempdir(), f'seqjax-errors-{os.getpid()}.log'))
  for path in targets:
    written = 0
    try:
      with open(path, 'a') as f:
        for part in parts:
          f.write(part)
          f.flush()
          written += 1
      return path
    except OSError:
      if written > 1:  # the traceback is in: good enough on a full disk
        return f'{path} (cut short: {ERROR_LOG} could not be written in full)'
  return '(nowhere: no writable place for a log)'


def classify(err: BaseException) -> tuple[int, str]:
  """``(exit code, one-line message)`` for an exception that ended a command."""
  from seqjax.data.errors import DataError  # pylint: disable=g-import-not-at-top
  from seqjax.training import errors  # pylint: disable=g-import-not-at-top
  text = str(err).strip().splitlines()
  first = text[0] if text else type(err).__name__
  code = getattr(err, 'exit_code', None)
  if isinstance(err, DataError):
    code = errors.EXIT_USER
  if code is not None:
    return code, first
  if isinstance(err, OSError):
    where = f' ({err.filename})' if err.filename else ''
    return errors.EXIT_ENVIRONMENT, f'{err.strerror or first}{where}'
  if 'RESOURCE_EXHAUSTED' in first:
    return errors.EXIT_ENVIRONMENT, f'out of device memory: {first[:200]}'
  return errors.EXIT_INTERNAL, f'internal error: {type(err).__name__}: {first[:300]}'


def _guarded(main: Callable[[list[str]], Any], workdir_flag: str):
  """``main`` with every ending mapped to one line and the exit code of ``classify``."""
  from seqjax.training import errors  # pylint: disable=g-import-not-at-top
  from seqjax.training.preemption import PREEMPTION  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    _capture_background_errors()
    try:
      PREEMPTION.check()  # SIGTERM while starting up
      return main(argv)
    except (SystemExit, KeyboardInterrupt):
      raise
    except errors.Preempted:
      exit_preempted()
    except Exception as err:  # pylint: disable=broad-except
      code, line = classify(err)
      # An expected condition (another trainer holds the workdir) is explained by its
      # line; a log would only clutter a workdir that is not ours.
      if (code in (errors.EXIT_ENVIRONMENT, errors.EXIT_INTERNAL)
          and getattr(err, 'log_traceback', True)):
        line += f' [traceback: {write_error_log(flags.FLAGS[workdir_flag].value, err)}]'
      print(f'error: {line}', file=sys.stderr)
      if code in (errors.EXIT_ENVIRONMENT, errors.EXIT_INTERNAL):
        # A failed process: skip interpreter shutdown, where stuck library threads and
        # atexit hooks (e.g. flushing to a full disk) would hang or print tracebacks.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # pylint: disable=protected-access
      sys.exit(code)

  return guarded


def run(main: Callable[[list[str]], Any], workdir_flag: str | None = None) -> None:
  """``absl.app.run`` where bad flags give one line and exit code 1, no traceback; with
  ``workdir_flag``, every other ending too (``classify``)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  body = _guarded(main, workdir_flag) if workdir_flag else main

  def with_host_memory(argv):
    host_memory.set_policy(HOST_MEMORY.value)  # before the first JAX computation
    return body(argv)

  app.run(with_host_memory, flags_parser=_parse_flags)
