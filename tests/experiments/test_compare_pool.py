"""``pool.map_jobs``: results in job order, follow-up jobs started as their parent
finishes (serially and on two worker processes), a failing job stops the pool, each
worker is pinned to a core of its own and runs under the parent's ``--host_memory``."""

from __future__ import annotations

import os
import time

import pytest

from experiments.comparison import pool
from seqjax.utils import host_memory


def _follow(index, result):
  # Each first-generation job spawns one follow-up that names its parent's index.
  return [{'n': result['n'] + 10, 'parent': index}] if result['n'] < 10 else []


@pytest.mark.parametrize('workers', [0, 1, 2])
def test_follow_up_jobs_run_and_come_back_after_the_jobs(workers):
  # ``dict`` is a picklable module-level function: dict(**job) returns the job.
  results = pool.map_jobs(dict, [{'n': 0}, {'n': 1}, {'n': 2}], workers, then=_follow)
  assert results[:3] == [{'n': 0}, {'n': 1}, {'n': 2}]
  assert sorted(r['n'] for r in results[3:]) == [10, 11, 12]
  for follow_up in results[3:]:
    assert results[follow_up['parent']]['n'] + 10 == follow_up['n']
  assert pool.map_jobs(dict, [{'n': 5}, {'n': 6}], workers) == [{'n': 5}, {'n': 6}]


def test_a_failing_job_raises_its_error():
  with pytest.raises(TypeError):
    pool.map_jobs(int, [{'bogus': 1}, {'bogus': 2}], 2)


def _cores_after_a_pause(seconds):
  time.sleep(seconds)  # long enough that each worker takes one job
  return sorted(os.sched_getaffinity(0))


def test_each_worker_gets_a_core_of_its_own():
  available = sorted(os.sched_getaffinity(0))
  got = pool.map_jobs(_cores_after_a_pause, [{'seconds': 2.0}, {'seconds': 2.0}], 2)
  if len(available) >= 2:
    assert all(len(cores) == 1 and cores[0] in available for cores in got)
    assert got[0] != got[1]
  else:  # fewer cores than workers: nothing is pinned
    assert got == [available, available]


def _worker_memory_policy():
  import jax  # pylint: disable=g-import-not-at-top
  return host_memory.in_effect(), jax.config.values['jax_cpu_enable_async_dispatch']


@pytest.mark.parametrize('policy, async_dispatch', [('reuse', False), ('keep', True)])
def test_workers_run_under_the_parents_host_memory_policy(policy, async_dispatch,
                                                          monkeypatch):
  monkeypatch.setattr(host_memory, 'in_effect', lambda: policy)
  got = pool.map_jobs(_worker_memory_policy, [{}], 1)
  assert got == [(policy, async_dispatch)]


def test_a_cell_computes_the_same_numbers_pinned_and_unpinned(tmp_path, monkeypatch):
  # XLA:CPU splits a step's arithmetic by the size of its thread pool; unpinned on two
  # cores it would use two threads and round differently from a worker pinned to one.
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path))
  job = dict(task='copying', family='lstm', seeds=[0], learning_rates=[1e-2], steps=30,
             eval_every=30, task_options={'delay': 8, 'num_tokens': 4},
             model_overrides={'num_layers': 1}, d_model=96, batch_size=16,
             num_train=64, num_validation=32, num_test=32)
  pinned = pool.run_cells([job], 1)
  monkeypatch.setattr(pool, '_worker_cores', lambda workers: [])
  unpinned = pool.run_cells([job], 1)  # free to use every core
  losses = [r['test_metrics'][0]['loss'] for r in pinned + unpinned]
  assert losses[0] == losses[1]
