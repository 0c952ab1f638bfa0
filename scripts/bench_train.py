"""Training-loop overhead: the full loop (data pipeline, metrics, logging, TensorBoard,
async checkpoints) against the bare jitted train step on the same model and batch size.

    python -m scripts.bench_train [--steps=300] [--quick]

Full-loop time per step is ``(T(n0 + steps) - T(n0)) / steps`` over two runs of
``seqjax.training.loop.train`` that differ only in ``num_steps``, so start-up, compilation
and the final evaluation cancel. The bare step is the same jitted, buffer-donating
``make_train_step`` fed one device-resident batch in a tight loop (median of 3 timings,
after a warm-up). Both are measured twice, interleaved, and the fastest kept (other
jobs on a shared machine only add time). Target: full-loop throughput >= 90 % of the bare step's.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

from absl import flags
import jax

from experiments import cli
from experiments.configs import selective_copying
from seqjax.data.pipeline import make_iterator
from seqjax.models.registry import build_model
from seqjax.training import configuration, loop, mesh as mesh_lib, optimizer as opt_lib
from seqjax.training import tasks
from seqjax.training.state import init_state
from seqjax.training.steps import make_train_step

_STEPS = flags.DEFINE_integer('steps', 300, 'Timed steps of the full loop.', lower_bound=1)
_QUICK = flags.DEFINE_bool('quick', False, '100 steps.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "Task data ('' = $SEQJAX_DATA_DIR or the "
                                'default cache).')


def bench_config(data_dir: str, num_steps: int):
  c = selective_copying.get_config()
  c.data_dir = data_dir
  c.num_steps = num_steps
  c.eval_every = 0          # evaluation is not training time
  c.log_every = 50
  c.checkpoint_every = 100
  c.task_options.num_validation = 64
  c.task_options.num_test = 64
  return c


def full_loop_seconds(data_dir: str, num_steps: int) -> float:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    loop.train(bench_config(data_dir, num_steps), workdir)
    return time.perf_counter() - start


def bare_step_seconds(data_dir: str, steps: int) -> float:
  config = bench_config(data_dir, steps)
  task = tasks.open_task(config)
  model_cfg = configuration.model_config(config, task.spec)
  model = build_model(model_cfg)
  tx, schedule = opt_lib.make_optimizer(config)
  mesh = mesh_lib.make_mesh()
  abstract = jax.eval_shape(lambda: init_state(model_cfg, tx, config.seed))
  shardings = mesh_lib.state_shardings(abstract, mesh, False)
  state = jax.jit(lambda: init_state(model_cfg, tx, config.seed), out_shardings=shardings)()
  batch_sh = mesh_lib.batch_sharding(mesh)
  step = jax.jit(make_train_step(model, task.spec.kind, 0, tx, schedule),
                 in_shardings=(shardings, batch_sh), donate_argnums=0)
  it = make_iterator(task.dataset('train'), task.spec, batch_size=config.batch_size, seed=0)
  batch = mesh_lib.global_batch(next(it), batch_sh)
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(3):  # median of 3 inside one measurement
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = step(state, batch)
    jax.block_until_ready((state, m))
    times.append((time.perf_counter() - t0) / steps)
  return statistics.median(times)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {argv[1:]}')
  steps = 100 if _QUICK.value else _STEPS.value
  data_dir = _DATA_DIR.value
  n0 = 50
  full_loop_seconds(data_dir, n0)  # generates the data and warms caches
  # Interleave the measurements and keep the fastest of each: on a shared machine other
  # jobs only ever add time.
  shorts, longs, bares = [], [], []
  for _ in range(2):
    shorts.append(full_loop_seconds(data_dir, n0))
    longs.append(full_loop_seconds(data_dir, n0 + steps))
    bares.append(bare_step_seconds(data_dir, steps))
  full = (min(longs) - min(shorts)) / steps
  bare = min(bares)
  result = {'benchmark': 'train_loop_overhead', 'model': 'transformer d64 L2',
            'task': 'selective_copying T=72 batch 32', 'steps': steps,
            'devices': jax.device_count(), 'bare_ms_per_step': round(bare * 1e3, 3),
            'full_ms_per_step': round(full * 1e3, 3),
            'full_over_bare_throughput': round(bare / full, 3), 'target': 0.9}
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main)
