"""Compile once, then time the compiled executable (no second compile on first call).

``common.compile_stats`` compiles a fresh ``jax.jit`` for its figures; timing a separate
``jax.jit(fn)`` afterwards compiles again, which doubles the wall time of benchmarks whose
programs take seconds to compile (Mamba, full models). ``compile_with_stats`` returns the
executable along with the same statistics.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def compile_with_stats(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], dict]:
  """``(compiled, stats)``: ``jax.jit(fn)`` compiled for ``args`` and the figures of
  ``common.compile_stats`` (compile seconds, temp/argument/output bytes)."""
  import jax  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  stats = {'compile_s': time.perf_counter() - start}
  memory = compiled.memory_analysis()
  if memory is not None:
    stats.update(temp_bytes=int(memory.temp_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes),
                 output_bytes=int(memory.output_size_in_bytes))
  return compiled, stats
