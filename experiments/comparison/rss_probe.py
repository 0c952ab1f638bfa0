"""Subprocess helper for the memory experiment: prints this process's peak RSS (MiB)
after one family's training step at the suite's shortest length, then after the step at
its longest length. The first figure is mostly the JAX runtime and compiled programs; the
difference is what the longer sequence costs."""

from __future__ import annotations

import json
import resource
import sys

import jax

from experiments.comparison.measure import lm_functions, ran_out_of_memory
from experiments.comparison.suite import SUITES, model_config


def peak_rss_mib() -> float:
  """This process's peak resident set size, in MiB.

  On Linux, ``VmHWM`` in ``/proc/self/status`` belongs to the address space, which
  ``exec`` replaces, so it counts this program alone. ``getrusage``'s ``ru_maxrss`` does
  not: the kernel keeps it across ``execve``, starting from the parent's peak at ``fork``,
  so a probe started by a large driver reported the driver's peak (3304 MiB for every
  model in the 2026-12-01 standard run). ``ru_maxrss`` stays the fallback where there is
  no ``/proc`` (KiB on Linux, bytes on macOS).
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == 'darwin' else peak / 1024


def main(spec: str) -> None:
  args = json.loads(spec)
  suite = SUITES[args['suite']]
  peaks = []
  for length in (min(suite.memory_lengths), max(suite.memory_lengths)):
    cfg = model_config(suite, args['family'], max_len=length + 1, **args['overrides'])
    params, tokens, grad_fn, _ = lm_functions(cfg, 1, length + 1, args['seed'])
    try:
      jax.block_until_ready(jax.jit(grad_fn)(params, tokens))
      peaks.append(peak_rss_mib())
    except jax.errors.JaxRuntimeError as error:
      if not ran_out_of_memory(error):
        raise
      peaks.append(None)  # the step does not fit in this machine's memory
  print(json.dumps(peaks))


if __name__ == '__main__':
  main(sys.argv[1])
