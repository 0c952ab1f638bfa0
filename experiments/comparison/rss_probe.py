"""Subprocess helper for the memory experiment: prints this process's peak RSS (MiB)
after one family's training step at the suite's shortest length, then after the step at
its longest length. The first figure is mostly the JAX runtime and compiled programs; the
difference is what the longer sequence costs."""

from __future__ import annotations

import json
import resource
import sys

import jax

from experiments.comparison.measure import lm_functions
from experiments.comparison.suite import SUITES, model_config


def main(spec: str) -> None:
  args = json.loads(spec)
  suite = SUITES[args['suite']]
  peaks = []
  for length in (min(suite.memory_lengths), max(suite.memory_lengths)):
    cfg = model_config(suite, args['family'], max_len=length + 1, **args['overrides'])
    params, tokens, grad_fn, _ = lm_functions(cfg, 1, length + 1, args['seed'])
    jax.block_until_ready(jax.jit(grad_fn)(params, tokens))
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
  print(json.dumps(peaks))


if __name__ == '__main__':
  main(sys.argv[1])
