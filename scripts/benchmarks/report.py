"""JSON lines from ``scripts.bench`` -> Markdown tables for BENCHMARKS.md.

Usage: ``python -m scripts.benchmarks.report bench.jsonl > tables.md``. One table per
``bench`` name (columns: every key its records have, minus bookkeeping), numbers rounded
to 3 significant digits, bytes shown in MiB. Paste the output under "Figures" in
BENCHMARKS.md when refreshing it.
"""

from __future__ import annotations

from collections import OrderedDict
import json
import sys

from absl import app

# Keys that are the same on every row of a table or repeat another column.
_SKIP = {'bench', 'suite', 'argument_bytes', 'output_bytes', 'repeats', 'target'}


def _fmt(key: str, value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, (int, float)) and key.endswith('_bytes'):
    return f'{value / 2 ** 20:.1f}'
  if isinstance(value, float):
    return f'{value:.3g}'
  if isinstance(value, list):
    return ', '.join(str(v) for v in value)
  return str(value)


def to_markdown(records: list[dict]) -> str:
  groups: OrderedDict[str, list[dict]] = OrderedDict()
  for r in records:
    groups.setdefault(r.get('bench', '?'), []).append(r)
  lines = []
  for bench, rows in groups.items():
    keys: list[str] = []
    for r in rows:
      keys += [k for k in r if k not in _SKIP and k not in keys]
    headers = [k.replace('_bytes', '_MiB') for k in keys]
    lines += [f'### {bench}', '', '| ' + ' | '.join(headers) + ' |',
              '|' + '---|' * len(keys)]
    for r in rows:
      lines.append('| ' + ' | '.join(_fmt(k, r[k]) if k in r else '' for k in keys) + ' |')
    targets = sorted({r['target'] for r in rows if 'target' in r})
    if targets:
      lines += [''] + [f'Target: {t}.' for t in targets]
    lines.append('')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  records = []
  for path in argv[1:] or ['/dev/stdin']:
    with open(path, encoding='utf-8') as f:
      records += [json.loads(line) for line in f if line.strip()]
  sys.stdout.write(to_markdown(records))


if __name__ == '__main__':
  app.run(main)
