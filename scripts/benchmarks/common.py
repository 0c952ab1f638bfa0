"""Machine figures and output shared by every benchmark (the timers are
``seqjax.utils.timing``, shared with the comparison report).

Rules every benchmark follows: compile and warm up before timing, ``block_until_ready`` on
every output, report the median of several runs, and compare against a peer measured in
the same process (timings on shared machines drift; ratios measured together do not).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp

from experiments import cli
from seqjax.utils import host_memory
from seqjax.utils.timing import time_fn


def matmul_peak_gflops(n: int = 2048, dtype: Any = jnp.float32) -> float:
  """Achieved GFLOP/s of a square float32 matmul: the machine's practical compute peak."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  ms = time_fn(f, a)['median_ms']
  return 2 * n ** 3 / (ms * 1e-3) / 1e9


def elementwise_bandwidth_gbs(num: int = 8 * 4096 * 256) -> float:
  """Achieved GB/s of ``a * b + c`` over float32 arrays (3 reads, 1 write per element).

  The byte count is right; low figures (2-4 GB/s at the default 8M elements on the shared
  2-core VM, vs 15-36 GB/s at 1M elements) come from the machine, not the formula: the
  32 MB output is a fresh allocation every call and its first-touch page faults cost as
  much as the arithmetic (donating the output buffer measured about 2.5x faster), and
  other jobs load the CPU. Every benchmark that writes a fresh output of that size pays
  the same cost, so ratios against this figure measured in the same run are fair; pass
  ``num`` equal to the element count of the operation being compared.
  """
  a, b, c = (jnp.full((num,), v, jnp.float32) for v in (1.0, 0.5, 0.25))
  f = jax.jit(lambda a, b, c: a * b + c)
  ms = time_fn(f, a, b, c)['median_ms']
  return 4 * 4 * num / (ms * 1e-3) / 1e9


def machine_info() -> dict:
  return {'platform': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'host_memory': host_memory.in_effect(),
          'jax': jax.__version__, 'python': platform.python_version(),
          'processor': platform.processor() or platform.machine(),
          'date': time.strftime('%Y-%m-%d')}


def emit(record: dict, out=None) -> None:
  """Writes one JSON line to ``out`` (default stdout) and flushes."""
  out = out or sys.stdout
  out.write(json.dumps(record, default=float) + '\n')
  out.flush()


def run_standalone(run: Callable[[bool], list[dict]], quick: bool = False) -> None:
  """``python -m scripts.benchmarks.<name> [--quick|--noquick]``: one benchmark, JSON
  lines on stdout (``quick`` is the flag's default)."""
  flags.DEFINE_bool('quick', quick, 'Shorter lengths and fewer repeats.')

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      cli.fail(f'unexpected arguments: {argv[1:]}')
    for record in run(flags.FLAGS.quick):
      emit(record)

  cli.run(main)  # also applies --host_memory
