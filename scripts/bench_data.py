"""Input-pipeline throughput: examples/s and batches/s of ``seqjax.data.pipeline``.

Three routes, all offline:

* ``memory``    — a synthetic-like in-memory source (random token ids, classification);
* ``csv``       — a generated CSV of (text, label) rows through ``get_task('csv')``;
* ``text_file`` — a generated text file as a char LM through ``get_task('text_file')``.

The data issue asks for >= 10x the examples/s a small model trains at; compare the numbers
printed here with the trainer's examples/s.

    python -m scripts.bench_data --batch_size=32 --seq_len=256 --batches=200
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import types

from absl import flags
import grain
import numpy as np

from experiments import cli

from seqjax.data.pipeline import make_iterator
from seqjax.data.registry import get_task
from seqjax.data.spec import TaskSpec

WORDS = ('the movie was great awful plot actor scene music long short good bad boring '
         'brilliant story ending character director camera').split()


def _time(it, batches: int, batch_size: int) -> dict[str, float]:
  next(it)  # first batch may pay one-off costs (epoch permutation, caches)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  secs = time.perf_counter() - start
  return {'batches_per_s': batches / secs, 'examples_per_s': batches * batch_size / secs}


def bench_memory(args) -> dict[str, float]:
  rng = np.random.default_rng(0)
  lengths = rng.integers(args.seq_len // 2, args.seq_len + 1, size=args.examples)
  exs = [{'inputs': rng.integers(4, 260, size=n, dtype=np.int32),
          'label': np.int32(rng.integers(2))} for n in lengths]
  spec = TaskSpec('bench_memory', 'classification', vocab_size=260, num_classes=2,
                  max_len=args.seq_len)
  it = make_iterator(grain.MapDataset.source(exs), spec, batch_size=args.batch_size, seed=0)
  return _time(it, args.batches, args.batch_size)


def bench_csv(args, tmp: str) -> dict[str, float]:
  rng = np.random.default_rng(1)
  path = os.path.join(tmp, 'bench.csv')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('text,label\n')
    for _ in range(args.examples):
      words = rng.choice(WORDS, size=int(rng.integers(5, args.seq_len // 6)))
      f.write(f'{" ".join(words)},{rng.choice(["pos", "neg"])}\n')
  start = time.perf_counter()
  task = get_task('csv', path=path, tokenizer='byte', max_len=args.seq_len, truncate=True)
  load = time.perf_counter() - start
  it = make_iterator(task.dataset('train'), task.spec, batch_size=args.batch_size, seed=0)
  return {'load_s': load, **_time(it, args.batches, args.batch_size)}


def bench_text_file(args, tmp: str) -> dict[str, float]:
  rng = np.random.default_rng(2)
  path = os.path.join(tmp, 'bench.txt')
  with open(path, 'w', encoding='utf-8') as f:
    for _ in range(args.examples):
      f.write(' '.join(rng.choice(WORDS, size=12)) + '\n')
  start = time.perf_counter()
  task = get_task('text_file', path=path, seq_len=args.seq_len)
  load = time.perf_counter() - start
  it = make_iterator(task.dataset('train'), task.spec, batch_size=args.batch_size, seed=0)
  return {'load_s': load, **_time(it, args.batches, args.batch_size)}


_SETTINGS = {
    'batch_size': flags.DEFINE_integer('batch_size', 32, 'Examples per batch.',
                                       lower_bound=1),
    'seq_len': flags.DEFINE_integer('seq_len', 256, 'Longest sequence.', lower_bound=8),
    'batches': flags.DEFINE_integer('batches', 200, 'Batches timed per route.',
                                    lower_bound=1),
    'examples': flags.DEFINE_integer('examples', 5000, 'Examples generated per route.',
                                     lower_bound=1),
}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {argv[1:]}')
  args = types.SimpleNamespace(**{name: flag.value for name, flag in _SETTINGS.items()})
  results = {}
  results['memory'] = bench_memory(args)
  with tempfile.TemporaryDirectory() as tmp:
    results['csv'] = bench_csv(args, tmp)
    results['text_file'] = bench_text_file(args, tmp)
  for route, r in results.items():
    print(f'{route:10s} ' + '  '.join(f'{k}={v:,.1f}' for k, v in r.items()))
  print(json.dumps({'settings': vars(args), 'results': results}))


if __name__ == '__main__':
  cli.run(main)
