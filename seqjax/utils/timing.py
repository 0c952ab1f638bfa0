"""Timing and compile statistics of jitted functions, shared by the benchmarks
(``scripts/``) and the comparison report (``experiments/comparison``).

The rules every measurement follows: compile and warm up before timing,
``block_until_ready`` on every output, report the median of several runs, and compare
against a peer measured in the same process (timings on shared machines drift; ratios
measured together do not).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax

from seqjax.utils.host_memory import minor_page_faults


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
                     repeats: int = 7, settle: int = 0) -> dict[str, dict]:
  """Like :func:`time_fn` for several ``name -> (jitted fn, args)``, timed round-robin
  (one call of each per round), so load from other jobs on a shared machine hits every
  variant alike and their ratios stay meaningful.

  ``settle`` untimed calls of a variant run right before each of its timed calls, so it
  is timed with the caches as its own previous step left them, as in a training loop.
  Without them a variant that follows one with a much larger working set pays for
  refilling the caches: the chunked-attention block at 256 tokens took 26 ms after the
  materialised Mamba block and 18 ms after itself (2026-12-02, BENCHMARKS.md "Mamba
  after issue 16, round 3").
  """
  for fn, args in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  faults = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      for _ in range(settle):
        jax.block_until_ready(fn(*args))
      faults_start = minor_page_faults()
      start, cpu_start = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      times[name].append((time.perf_counter() - start) * 1e3)
      cpu[name].append((time.process_time() - cpu_start) * 1e3)
      faults[name].append(minor_page_faults() - faults_start)
  # median_cpu_ms: CPU time of this process (all threads), which other jobs' load
  # inflates much less than wall time. median_page_faults: first touches of fresh host
  # memory in a call (seqjax/utils/host_memory.py: the allocator's share of the time).
  return {name: {'median_ms': statistics.median(t), 'min_ms': min(t), 'repeats': repeats,
                 'median_cpu_ms': statistics.median(cpu[name]),
                 'median_page_faults': statistics.median(faults[name])}
          for name, t in times.items()}


def compile_with_stats(fn: Callable[..., Any], *args: Any,
                       compiler_options: dict[str, Any] | None = None
                       ) -> tuple[Callable[..., Any], dict]:
  """``(compiled, stats)``: ``jax.jit(fn)`` compiled for ``args`` (with XLA
  ``compiler_options``, e.g. ``seqjax.utils.xla.fast_compile_options()``), and its compile time (``compile_s``)
  and XLA's memory analysis (``temp_bytes``, ``argument_bytes``, ``output_bytes``).
  Timing the returned executable costs no second compile."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile(compiler_options=compiler_options)
  stats = {'compile_s': time.perf_counter() - start}
  memory = compiled.memory_analysis()
  if memory is not None:
    stats.update(temp_bytes=int(memory.temp_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes),
                 output_bytes=int(memory.output_size_in_bytes))
  return compiled, stats


def compile_stats(fn: Callable[..., Any], *args: Any,
                  compiler_options: dict[str, Any] | None = None) -> dict:
  """The statistics of :func:`compile_with_stats` alone."""
  return compile_with_stats(fn, *args, compiler_options=compiler_options)[1]
