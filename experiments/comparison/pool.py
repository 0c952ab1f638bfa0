"""Trains a list of comparison cells on several worker processes.

A small model's train step on XLA:CPU runs on one core (its process CPU time equals its
wall time), so on a 2-core machine two cells trained side by side take about the time of
one. ``run_cells(jobs, workers)`` calls ``training.train_cell(**job)`` for every job,
on ``workers`` processes started with ``spawn`` (JAX does not survive ``fork``), and
returns the records in the jobs' order. Each job's datasets are generated here first, in
the parent, so that no two workers ever build the same TFDS dataset at once.

Timing experiments never run while workers train: the driver measures them before or
after, in the parent process alone.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
from typing import Any, Callable

import jax
import tqdm

from experiments.comparison import training
from seqjax.training import tasks


def default_workers() -> int:
  """One worker per CPU core on a CPU backend (at most 4: memory bandwidth is shared),
  one on an accelerator (its device is the shared resource)."""
  if jax.default_backend() != 'cpu':
    return 1
  return max(1, min(os.cpu_count() or 1, 4))


def prepare(job: dict[str, Any]) -> None:
  """Generates (or finds) every dataset ``job`` will read: each seed's task and extras."""
  config = training.experiment_config(
      job['task'], job['family'], steps=job['steps'], seed=job['seeds'][0],
      **{k: v for k, v in job.items() if k in training.CONFIG_KEYS})
  for seed in job['seeds']:
    for options in [{}, *(job.get('extra_tests') or {}).values()]:
      config.seed = seed
      opened = config.copy_and_resolve_references()
      opened.task_options.update(dict(options))
      task = tasks.open_task(opened)
      for split in task.spec.splits:  # tasks generate their data on first use
        task.dataset(split)


def _init_worker() -> None:
  # One thread per worker: the workers already fill the cores.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_multi_thread_eigen=false').strip()


def map_jobs(fn: Callable[..., Any], jobs: list[dict[str, Any]],
             workers: int) -> list[Any]:
  """``[fn(**job) for job in jobs]`` on ``workers`` processes when > 1 (0 =
  ``default_workers()``). ``fn`` must be a module-level function (workers import it by
  name) and two jobs must not generate the same dataset: call ``prepare`` first."""
  workers = workers or default_workers()
  # A long suite shows how many cells are done (stderr; finished cells, not steps).
  progress = functools.partial(tqdm.tqdm, total=len(jobs), unit='cell',
                               desc=f'{len(jobs)} cells on {min(workers, len(jobs))} '
                                    'process(es)', disable=len(jobs) <= 1)
  if workers <= 1 or len(jobs) <= 1:
    return [fn(**job) for job in progress(jobs)]
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(
      max_workers=min(workers, len(jobs)), mp_context=context,
      initializer=_init_worker) as executor:
    futures = [executor.submit(_call, fn, job) for job in jobs]
    for future in progress(concurrent.futures.as_completed(futures)):
      if future.exception() is not None:  # stop now, not after every other cell
        executor.shutdown(wait=False, cancel_futures=True)
        raise future.exception()
    return [future.result() for future in futures]


def _call(fn: Callable[..., Any], job: dict[str, Any]) -> Any:
  return fn(**job)


def run_cells(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
  """``[train_cell(**job) for job in jobs]`` (see ``map_jobs``), datasets prepared
  first."""
  for job in jobs:
    prepare(job)
  return map_jobs(training.train_cell, jobs, workers)
