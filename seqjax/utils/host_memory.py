"""How the host's allocator treats the buffers of XLA:CPU steps (``--host_memory``).

XLA:CPU allocates the temporaries of every step (one buffer: 122 MiB for a Mamba block's
train step at 2,048 tokens, ``d_model`` 256) with ``malloc`` from its worker threads
(under JAX's default asynchronous dispatch) and frees it at the end of the step. glibc
serves a request that large with a fresh ``mmap`` (a thread's arena holds at most
64 MiB) and returns it with ``munmap``, and it hands the
top of a heap back to the kernel once 128 KiB of it are free, so the next step faults the
pages in again and the kernel zeroes each one: 131,000 minor page faults, 513 MiB, per
step of that block at 8,192 tokens. GPU and TPU runtimes keep their device memory in a
caching allocator; on CPU this tax grows with the sequence length, and it was the growth
of the Mamba block's cost per token from 256 to 8,192 tokens (BENCHMARKS.md, "Host
memory"). Three policies (glibc ``mallopt`` settings, and for ``reuse`` JAX's dispatch
mode, applied before JAX starts its CPU client: a thread keeps the arena it first
allocated from, and the client reads the dispatch mode when it is made):

``system`` leaves the C library's settings: what a process gets that never calls
:func:`set_policy` (library use, the tests). Commands (``experiments/cli.run``) apply
``--host_memory``, whose default is ``reuse``.

``keep`` (what the comparison's worker processes used before round 6) keeps each
thread's arena and lets the heaps hold more: blocks up to 32 MiB come from them instead
of fresh mappings (``M_MMAP_THRESHOLD``), they grow in 256 MiB steps
(``M_TOP_PAD``) and hand memory back only above 1 GiB free (``M_TRIM_THRESHOLD``). No
lock is shared, but a block over 64 MiB is still mapped afresh every step. Measured: one
Mamba selective-copying cell (length 64, 200 steps) 1.9 M -> 0.21 M minor page faults and
35 -> 28 s of training, the same numbers computed; at 2,048 tokens the MLP-only block
52.0 -> 40.7 ms and the attention block 195 -> 174 ms per step, the Mamba block (its
122 MiB buffer) unchanged, as all three at 8,192 tokens.

``reuse`` keeps every freed block. XLA:CPU dispatches a computation to a worker thread
unless asked to run it in the calling thread (``jax_cpu_enable_async_dispatch``), and
the thread that runs it allocates its buffers. ``reuse`` turns that off, so the step
buffers come from the main thread's arena, which grows with ``brk`` and has no size cap;
glibc then may not serve them with ``mmap`` (``M_MMAP_MAX=0``) and never trims
(``M_TRIM_THRESHOLD`` at its maximum), so a freed step buffer is there for the next step.
The other threads keep their own arenas (no shared lock), and their heaps do not shrink
either. Measured (BENCHMARKS.md, "Host memory, round 6"): the Mamba block's train step
at 2,048 tokens 184 -> 138 ms and 32,900 -> 186 page faults per step, peak RSS unchanged
(515 vs 520 MiB); at 256-512 tokens within 5 % of ``system`` in three processes each;
training a Mamba LM at 2,048 tokens 0.27 -> 0.17 s per step and a small Transformer on
selective copying 0.051 -> 0.034 s per step (fewer threads compete for the two cores),
the same numbers computed. What it gives up: Python waits for every computation instead
of queueing the next one behind it, and the process keeps its peak memory until it
exits. A computation over several local devices still runs one pool thread per device
(XLA needs them side by side for collectives), so there the buffers come from those
threads' heaps as under ``keep``.

An earlier ``reuse`` (round 5) put every thread on the main arena (``M_ARENA_MAX=1``)
instead: as fast on long steps, but 256-512-token steps were up to 1.33x slower, with
the threads waiting on the one arena's lock (27-33 vs 17-18 voluntary context switches
per step), and peak RSS 1.6-2x. A preloaded tcmalloc (``LD_PRELOAD``, Debian package
``libtcmalloc-minimal4``) also keeps large blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

from absl import logging

POLICIES = ('system', 'keep', 'reuse')

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_SETTINGS = {
    'keep': ((_M_TRIM_THRESHOLD, 1 << 30),  # hand memory back only above 1 GiB free
             (_M_TOP_PAD, 256 << 20),  # grow a heap in 256 MiB steps
             (_M_MMAP_THRESHOLD, 32 << 20)),  # blocks up to 32 MiB from the heaps
    'reuse': ((_M_MMAP_MAX, 0),  # no mmap: the main arena grows its brk heap instead
              (_M_TRIM_THRESHOLD, 2 ** 31 - 1)),  # and never hands it back
}
_in_effect = 'system'


def set_policy(policy: str) -> str:
  """Applies ``policy`` to this process's allocator; returns what is in effect.

  ``keep`` and ``reuse`` need glibc (Linux); elsewhere they fall back to ``system`` with a
  log line. Call it before the first JAX computation (see the module docstring).
  """
  global _in_effect
  if policy not in POLICIES:
    raise ValueError(f'host memory policy {policy!r}: choose from {POLICIES}')
  if policy == 'system':
    return _in_effect  # settings already made stay: glibc has no way back to "default"
  mallopt = _glibc_mallopt()
  if mallopt is None:
    logging.info('host_memory=%s needs glibc; keeping the system allocator settings', policy)
    return _in_effect
  if _jax_backend_started():
    logging.warning('host_memory=%s set after JAX started its CPU client: threads that '
                    'already allocated keep their arenas, and the client its dispatch '
                    'mode', policy)
  if policy == 'reuse':  # the step buffers then come from the calling (main) thread
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  accepted = [mallopt(param, value) == 1 for param, value in _SETTINGS[policy]]
  if not all(accepted):  # each setting is tried, whatever the others did
    logging.warning('glibc refused a host_memory=%s setting; partly applied', policy)
  _in_effect = policy
  return _in_effect


def in_effect() -> str:
  """The policy this process runs under: the last one :func:`set_policy` applied."""
  return _in_effect


def minor_page_faults() -> int:
  """Minor page faults of this process so far (``getrusage``): first touches of fresh
  memory, the cost that ``keep`` and ``reuse`` remove."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _glibc_mallopt():
  if not sys.platform.startswith('linux'):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other C libraries have no mallopt
    return None
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return mallopt


def _jax_backend_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()
