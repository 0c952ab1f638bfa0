"""The stderr copier of multi-process trainers (``seqjax/training/fatal_filter.py``):
everything passes through byte for byte, except JAX's abort on a lost coordination
service, which becomes one line naming what stopped. The inputs are the log lines JAX
0.10 printed in the two-process runs of tests/training/test_train_runs.py."""

from __future__ import annotations

import os
import threading

import pytest

from seqjax.training import fatal_filter

ORDINARY = (b'I1202 12:16:09.089150 loop.py:174] task selective_copying (token)\n'
            b'Generating splits...:   0%|          | 0/3\r'
            b'Generating splits...: 100%|##########| 3/3\r\n'
            b'E1202 12:11:21.2 coordination_service_agent.cc:289] a transient error\n'
            b'[train] step 2: loss=2.876\n')
PRELUDE = (b'E1202 12:11:21.228694 5006 coordination_service_agent.cc:289] Polled an error '
           b'from coordination service (this can be an error from this or another task).\n')
TRACE = (b'*** Check failure stack trace: ***\n'
         b'    @     0x7f562cd58634  absl::log_internal::LogMessage::SendToLog()\n'
         b'Fatal Python error: Aborted\n\nThread 0x00007f563cfbab80 (most recent call first):\n'
         b'  File "/work/main/seqjax/training/multihost.py", line 141 in peer_failure\n')
FATAL = (b'F1202 12:11:21.228746 5006 client.h:80] Terminating process because the JAX '
         b'distributed service detected fatal errors. This most likely indicates that '
         b'another task died; see the other task logs for more details.\n')
SOCKET = (b'Additional GRPC error information from remote target coordination_service while '
          b'calling /xla.coordination.CoordinationService/PollForError:\n'
          b':UNKNOWN:Error received from peer  {grpc_message:"Socket closed", '
          b'grpc_status:14}\n')
HEARTBEATS = (b'UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n'
              b'1, 3\nThe tasks have crashed.\n')


def _filtered(data: bytes, piece: int = 7) -> bytes:
  """``data`` through ``fatal_filter.run``, written in ``piece``-byte writes (lines
  arrive split across reads)."""
  src_r, src_w = os.pipe()
  out_r, out_w = os.pipe()
  worker = threading.Thread(target=fatal_filter.run, args=(src_r, out_w))
  worker.start()
  for i in range(0, len(data), piece):
    os.write(src_w, data[i:i + piece])
  os.close(src_w)
  worker.join(10)
  os.close(out_w)
  chunks = []
  while chunk := os.read(out_r, 65536):
    chunks.append(chunk)
  os.close(src_r)
  os.close(out_r)
  return b''.join(chunks)


def test_ordinary_output_passes_through_unchanged():
  # Carriage-return progress bars and a runtime error line not followed by an abort
  # (held back, then written when the next ordinary line comes) included.
  assert _filtered(ORDINARY) == ORDINARY
  assert _filtered(ORDINARY + b'no newline at the end') == ORDINARY + b'no newline at the end'
  assert _filtered(ORDINARY + PRELUDE) == ORDINARY + PRELUDE   # held until EOF, then out


@pytest.mark.parametrize('status, want', [
    (SOCKET, b'error: process 0 (the coordinator'),
    (HEARTBEATS, b'error: processes 1, 3 stopped sending heartbeats'),
    (b'Status: INTERNAL: something else\n', b'error: the JAX distributed service reported '
                                             b'a fatal error, so this process stops '
                                             b'(INTERNAL: something else)'),
])
def test_the_abort_becomes_one_line_naming_what_stopped(status, want):
  got = _filtered(ORDINARY + PRELUDE + FATAL + status + TRACE)
  assert got.startswith(ORDINARY)
  rest = got[len(ORDINARY):].decode()
  assert rest.count('\n') == 1 and rest.startswith(want.decode()), rest
  assert 'newest checkpoint' in rest
  # No stack trace after it: the line is said at the end of the stream.
  assert _filtered(FATAL + status).decode().startswith(want.decode())
