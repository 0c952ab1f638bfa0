"""seqjax benchmark harness: every performance figure of issue 6, side by side, one process.

Usage::

    python -m scripts.bench                   # full run, JSON lines to stdout
    python -m scripts.bench --quick           # ~2 minutes on a quiet 2-core CPU
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

import argparse
import importlib
import sys
import time
import traceback

from scripts.benchmarks import common

# name -> module under scripts.benchmarks, in report order.
BENCHMARKS = ('lstm', 'attention', 'scan', 'mamba_vs_transformer', 'decode', 'compile_time')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='shorter lengths and fewer repeats (~2 minutes)')
  parser.add_argument('--only', default='',
                      help=f'comma-separated subset of {",".join(BENCHMARKS)}')
  parser.add_argument('--out', default='', help='JSON-lines file (default: stdout)')
  args = parser.parse_args(argv)
  only = [name.strip() for name in args.only.split(',') if name.strip()]
  unknown = sorted(set(only) - set(BENCHMARKS))
  if unknown:
    parser.error(f'--only: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}')
  args.names = [name for name in BENCHMARKS if not only or name in only]
  return args


def machine_record(quick: bool) -> dict:
  return {'bench': 'machine', **common.machine_info(), 'mode': 'quick' if quick else 'full',
          'matmul_peak_gflops': common.matmul_peak_gflops(),
          'elementwise_bandwidth_gbs': common.elementwise_bandwidth_gbs()}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  out = open(args.out, 'w', encoding='utf-8') if args.out else sys.stdout
  failed = []
  start = time.perf_counter()
  try:
    common.emit(machine_record(args.quick), out)
    for name in args.names:
      t0 = time.perf_counter()
      print(f'[bench] {name} ...', file=sys.stderr, flush=True)
      try:
        module = importlib.import_module(f'scripts.benchmarks.{name}')
        for record in module.run(quick=args.quick):
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
  sys.exit(main())
