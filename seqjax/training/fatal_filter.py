"""A pass-through for a multi-process trainer's stderr that turns JAX's fatal abort into one
line.

When the coordination service is lost (process 0, which hosts it, died) every other
process's JAX client aborts the process at once: a ``client.h] Terminating process
because the JAX distributed service detected fatal errors`` log line, the C++ "Check
failure" stack trace and Python's fault-handler dump of every thread. JAX 0.10 offers no
hook to replace that abort (its missed-heartbeat callback fails with ``std::bad_cast``),
so ``seqjax.training.multihost`` routes the process's stderr (file descriptor 2) through
this small program, started before JAX joins the job. It copies every line through
unchanged until the fatal line (holding back the runtime's error lines that precede it);
from there it prints one ``error: ...`` line naming what stopped and drops the rest (the
dump, and the held lines). The process still ends by the abort (SIGABRT);
only what it prints changes. Set ``SEQJAX_RAW_STDERR=1`` to see the raw output instead.

Run as a file (``python fatal_filter.py``), not as a module: it imports nothing from
seqjax, so it starts in milliseconds and cannot fail on the package's imports.
(``multihost`` imports it for ``RESUME``, the advice both one-line errors end with.)
"""

from __future__ import annotations

import os
import re
import signal
import sys

FATAL = b'Terminating process because the JAX distributed service detected fatal errors'
END_OF_MESSAGE = b'*** Check failure stack trace'
# The distributed runtime's error lines that come just before its abort (a failed RPC to
# the lost service and its gRPC details): held back, and dropped if the abort follows.
PRELUDE = (b'coordination_service_agent.cc', b'coordination_service.cc',
           b'preemption_sync_manager.cc', b'Additional GRPC error information',
           b'Error received from peer')
RESUME = ("see that process's own error, then rerun the job to resume from the newest "
          'checkpoint')


def summary(message: bytes) -> str:
  """The one line for JAX's fatal message (its log line and the status lines after it)."""
  text = message.decode('utf-8', 'replace')
  if any(s in text for s in ('Socket closed', 'Connection refused', 'failed to connect',
                             'Connection reset')):
    return ('error: process 0 (the coordinator, which hosts the job\'s coordination '
            f'service) stopped, so this one stops too; {RESUME}')
  heartbeats = re.search(r'stopped sending heartbeats\)?:\s*([\d,\s]+)', text)
  if heartbeats:
    ids = [i for i in re.split(r'[,\s]+', heartbeats.group(1)) if i]
    who = f'process{"es" if len(ids) > 1 else ""} {", ".join(ids)}'
    return (f'error: {who} stopped sending heartbeats, so this one stops too; {RESUME}')
  status = text.split('Status:', 1)[-1].strip().splitlines()
  first = status[0][:200] if status else 'no status'
  return ('error: the JAX distributed service reported a fatal error, so this process '
          f'stops ({first}); see the other processes\' errors, then rerun the job to '
          'resume from the newest checkpoint')


def lines(data: bytes) -> tuple[list[bytes], bytes]:
  """Complete lines (ending in ``\\n`` or ``\\r``, kept) and the unfinished rest."""
  parts = re.split(rb'(?<=[\r\n])', data)
  return parts[:-1], parts[-1]


def run(source: int, sink: int) -> None:
  """Copies ``source`` to ``sink`` line by line until EOF, summarising JAX's abort."""
  pending, held, message = b'', b'', None
  while True:
    chunk = os.read(source, 65536)
    if not chunk:
      break
    done, pending = lines(pending + chunk)
    for line in done:
      if message is None and FATAL in line:
        message, held = line, b''
      elif message is not None and message is not False:
        if END_OF_MESSAGE in line:
          os.write(sink, (summary(message) + '\n').encode())
          message = False  # said; drop everything after it
        else:
          message += line
      elif message is None and any(p in line for p in PRELUDE):
        held += line
      elif message is None:
        os.write(sink, held + line)
        held = b''
  if message:  # the stack trace never came: say it at the end
    os.write(sink, (summary(message) + '\n').encode())
  elif message is None:
    os.write(sink, held + pending)


if __name__ == '__main__':
  # The trainer handles SIGTERM / Ctrl-C (pre-emption); this copier must outlive them to
  # pass on what the trainer prints while it stops.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  run(0, 2)
