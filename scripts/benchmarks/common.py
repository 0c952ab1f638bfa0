"""Timing and memory helpers shared by every benchmark.

Rules every benchmark follows: compile and warm up before timing, ``block_until_ready`` on
every output, report the median of several runs, and compare against a peer measured in
the same process (timings on shared machines drift; ratios measured together do not).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def time_fn(fn: Callable[..., Any], *args: Any, warmup: int = 2, repeats: int = 7) -> dict:
  """Median / min wall time in milliseconds of ``fn(*args)`` (already jitted), after warm-up."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return {'median_ms': statistics.median(times), 'min_ms': min(times), 'repeats': repeats}


def time_interleaved(fns: dict[str, tuple[Callable[..., Any], tuple]], warmup: int = 2,
                     repeats: int = 7) -> dict[str, dict]:
  """Like :func:`time_fn` for several ``name -> (jitted fn, args)``, timed round-robin
  (one call of each per round), so load from other jobs on a shared machine hits every
  variant alike and their ratios stay meaningful."""
  for fn, args in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      start, cpu_start = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      times[name].append((time.perf_counter() - start) * 1e3)
      cpu[name].append((time.process_time() - cpu_start) * 1e3)
  # median_cpu_ms: CPU time of this process (all threads), which other jobs' load
  # inflates much less than wall time.
  return {name: {'median_ms': statistics.median(t), 'min_ms': min(t), 'repeats': repeats,
                 'median_cpu_ms': statistics.median(cpu[name])}
          for name, t in times.items()}


def compile_stats(fn: Callable[..., Any], *args: Any) -> dict:
  """Compile time and XLA's memory analysis of ``jax.jit(fn)`` on ``args``."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  stats = {'compile_s': seconds}
  memory = compiled.memory_analysis()
  if memory is not None:
    stats.update(temp_bytes=int(memory.temp_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes),
                 output_bytes=int(memory.output_size_in_bytes))
  return stats


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
          'jax': jax.__version__, 'python': platform.python_version(),
          'processor': platform.processor() or platform.machine(),
          'date': time.strftime('%Y-%m-%d')}


def emit(record: dict, out=None) -> None:
  """Writes one JSON line to ``out`` (default stdout) and flushes."""
  out = out or sys.stdout
  out.write(json.dumps(record, default=float) + '\n')
  out.flush()


def run_standalone(run: Callable[[bool], list[dict]], doc: str) -> None:
  """``python -m scripts.benchmarks.<name> [--quick]``: one benchmark, JSON lines out."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  for record in run(parser.parse_args().quick):
    emit(record)
