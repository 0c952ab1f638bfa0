"""How the host's allocator treats the buffers of XLA:CPU steps (``--host_memory``).

XLA:CPU allocates the temporaries of every step (one buffer: 122 MiB for a Mamba block's
train step at 2,048 tokens, ``d_model`` 256) with ``malloc`` from its worker threads and
frees it at the end of the step. glibc serves a request that large with a fresh ``mmap``
(a thread's arena holds at most 64 MiB) and returns it with ``munmap``, and it hands the
top of a heap back to the kernel once 128 KiB of it are free, so the next step faults the
pages in again and the kernel zeroes each one: 131,000 minor page faults, 513 MiB, per
step of that block at 8,192 tokens. GPU and TPU runtimes keep their device memory in a
caching allocator; on CPU this tax grows with the sequence length, and it was the growth
of the Mamba block's cost per token from 256 to 8,192 tokens (BENCHMARKS.md, "Host
memory"). Three policies (glibc ``mallopt`` settings, applied before JAX starts its CPU
client, since a thread keeps the arena it first allocated from):

``system`` (the default) leaves the C library's settings.

``keep`` (what the comparison's worker processes use, ``experiments/comparison/pool.py``)
keeps each thread's arena and lets the heaps hold more: blocks up to 32 MiB come from
them instead of fresh mappings (``M_MMAP_THRESHOLD``), they grow in 256 MiB steps
(``M_TOP_PAD``) and hand memory back only above 1 GiB free (``M_TRIM_THRESHOLD``). No
lock is shared, but a block over 64 MiB is still mapped afresh every step. Measured: one
Mamba selective-copying cell (length 64, 200 steps) 1.9 M -> 0.21 M minor page faults and
35 -> 28 s of training, the same numbers computed; at 2,048 tokens the MLP-only block
52.0 -> 40.7 ms and the attention block 195 -> 174 ms per step, the Mamba block (its
122 MiB buffer) unchanged, as all three at 8,192 tokens.

``reuse`` keeps every freed block: one arena for all threads (``M_ARENA_MAX=1``: the main
arena grows with ``brk`` and has no size cap), no ``mmap`` for large blocks
(``M_MMAP_MAX=0``) and no trim (``M_TRIM_THRESHOLD`` at its maximum). Block train steps at
1K-8K tokens took 0.65-0.78x the time (Mamba), 0.65-0.75x (exact attention), 0.89-1.05x
(chunked attention), with no page faults. The costs: at 256-512 tokens steps were up to
1.33x slower in some processes and 1-9 % in others; threads wait on the one arena's lock
(voluntary context switches per step of the attention block at 256 tokens: 27-33 vs
17-18; over a whole benchmark process, compilation included, 86,000 vs 10,500;
``bench --quick`` 106 vs 97 s), though the slowdown varies between processes more than
those counts do, so the lock may not be the whole cause. The heap settles after a few
steps (an aligned request cannot take the exact block the previous step freed until
freed blocks coalesce), and the process keeps that memory until it exits: peak RSS
1.6-2x the default's (the Mamba block at 2K / 8K tokens: 841 vs 528 MiB, 1,854 vs 947
MiB). So ``reuse`` is a choice for long sequences on CPU. A preloaded tcmalloc
(``LD_PRELOAD``, Debian package ``libtcmalloc-minimal4``) also keeps large blocks; it
showed no short-step cost in one probe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

from absl import logging

POLICIES = ('system', 'keep', 'reuse')

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -3, -4, -8
_SETTINGS = {
    'keep': ((_M_TRIM_THRESHOLD, 1 << 30),  # hand memory back only above 1 GiB free
             (_M_TOP_PAD, 256 << 20),  # grow a heap in 256 MiB steps
             (_M_MMAP_THRESHOLD, 32 << 20)),  # blocks up to 32 MiB from the heaps
    'reuse': ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)),
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
                    'already allocated keep their arenas', policy)
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
