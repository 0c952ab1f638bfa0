"""seqjax benchmark harness: every performance figure of issue 6, side by side, one process.

Usage::

    python -m scripts.bench                   # full run, JSON lines to stdout
    python -m scripts.bench --quick           # < 3 min on a quiet 2-core CPU (2026-12-02)
    python -m scripts.bench --only=attention,decode --out=bench.jsonl

The first record describes the machine (platform, devices, versions, date) with the
matmul peak (GFLOP/s) and elementwise bandwidth (GB/s) measured in this run, which the
other figures are compared with. Then one record per measurement from each benchmark in
``BENCHMARKS`` (each module's ``run(quick) -> list[dict]``), tagged with ``bench``.
A benchmark that fails emits ``{"bench": name, "error": ...}`` and the run goes on; the
exit status is 1 if any failed. Progress goes to stderr, records to ``--out`` / stdout.
See BENCHMARKS.md for the latest figures and what each target means.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

from absl import flags

from experiments import cli
from scripts.benchmarks import common

# name -> module under scripts.benchmarks, in report order.
BENCHMARKS = ('lstm', 'attention', 'scan', 'mamba_vs_transformer', 'recurrent', 'decode',
              'compile_time')

_QUICK = flags.DEFINE_bool('quick', False, 'Shorter lengths, fewer repeats, variants and '
                           'families (< 3 minutes).')
_ONLY = flags.DEFINE_list('only', [], f'Subset of {",".join(BENCHMARKS)}.')
_OUT = flags.DEFINE_string('out', '', 'JSON-lines file (default: stdout).')


def machine_record(quick: bool) -> dict:
  return {'bench': 'machine', **common.machine_info(), 'mode': 'quick' if quick else 'full',
          'matmul_peak_gflops': common.matmul_peak_gflops(),
          'elementwise_bandwidth_gbs': common.elementwise_bandwidth_gbs()}


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {argv[1:]}')
  unknown = sorted(set(_ONLY.value) - set(BENCHMARKS))
  if unknown:
    cli.fail(f'--only: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}')
  names = [name for name in BENCHMARKS if not _ONLY.value or name in _ONLY.value]
  quick = _QUICK.value
  out = open(_OUT.value, 'w', encoding='utf-8') if _OUT.value else sys.stdout
  failed = []
  start = time.perf_counter()
  try:
    common.emit(machine_record(quick), out)
    for name in names:
      t0 = time.perf_counter()
      print(f'[bench] {name} ...', file=sys.stderr, flush=True)
      try:
        module = importlib.import_module(f'scripts.benchmarks.{name}')
        for record in module.run(quick=quick):
          common.emit({'suite': name, 'bench': name, **record}, out)
      except Exception as e:  # pylint: disable=broad-except
        # One broken benchmark must not cost the figures of the others.
        failed.append(name)
        traceback.print_exc(file=sys.stderr)
        common.emit({'bench': name, 'error': f'{type(e).__name__}: {e}'}, out)
      print(f'[bench] {name} done in {time.perf_counter() - t0:.1f}s', file=sys.stderr,
            flush=True)
    common.emit({'bench': 'done', 'total_s': time.perf_counter() - start,
                 'failed': failed}, out)
  finally:
    if out is not sys.stdout:
      out.close()
  return 1 if failed else 0


if __name__ == '__main__':
  cli.run(main)
