"""The one trainer: ``train(config, workdir)`` for every task kind and model family.

Flow (nanodo / flax-examples style): check the config -> open the task -> build the
``ModelConfig`` and model -> mesh and shardings -> restore the newest readable checkpoint
(params, optimizer state, rng, data-iterator state) or initialise -> loop over
``num_steps`` jitted, buffer-donating train steps, logging every ``log_every``, evaluating
on the validation split every ``eval_every`` and checkpointing every ``checkpoint_every``
(and at every evaluation, with its metric, for best-checkpoint retention) -> final test
evaluation on the best checkpoint.

Step metrics stay on the device until the next log/checkpoint boundary, so the host never
waits for the device inside the loop; at the boundary a non-finite loss stops the run with
``NonFiniteLossError`` naming the step, *before* anything after it is saved. Rerunning the
same command on the same workdir resumes exactly where the last checkpoint left off.
SIGTERM (pre-emption) sets a flag; the loop saves at the current step and ``train``
returns normally (the entry point exits with code 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from seqjax.data.pipeline import make_eval_iterator, make_iterator
from seqjax.data.registry import get_task
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, example_inputs
from seqjax.training import configuration, losses, mesh as mesh_lib, optimizer as opt_lib
from seqjax.training.checkpointing import Checkpointer
from seqjax.training.errors import NonFiniteLossError, UserError
from seqjax.training.metrics_writer import MetricsWriter
from seqjax.training.state import TrainState, init_state, param_count
from seqjax.training.steps import make_eval_step, make_train_step

CHECKPOINT_DIR = 'checkpoints'


class _Preemption:
  """SIGTERM sets a flag the loop polls (Orbax's ``reached_preemption`` needs
  ``jax.distributed``; a flag works on one host too)."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def open_task(config, saved_metadata: dict[str, Any] | None = None):
  """The task of ``config``. ``saved_metadata`` (a run's saved ``task.metadata``) supplies
  the run's tokenizer, so resuming and evaluating read the data with the vocabulary the
  model was trained with instead of rebuilding one (slow for IMDB-sized data, and wrong if
  the data changed since)."""
  options = config.task_options.to_dict() if config.task_options else {}
  if saved_metadata and 'tokenizer' in saved_metadata:
    options['tokenizer'] = saved_metadata['tokenizer']
  return get_task(config.task, data_dir=config.data_dir or None, seed=config.seed,
                  **options)


def saved_task_metadata(workdir: str) -> dict[str, Any] | None:
  """The task metadata (e.g. the tokenizer) saved with the newest readable checkpoint."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  ckpt = Checkpointer(directory, read_only=True)
  try:
    meta = _saved_meta(ckpt)
  finally:
    ckpt.close()
  return meta['task']['metadata'] if meta else None


def abstract_with(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def evaluate_params(eval_step, params, task, split: str, batch_size: int,
                    batch_sharding, max_batches: int = 0) -> dict[str, float]:
  """Metrics of ``params`` over ``split`` (or its first ``max_batches`` batches)."""
  it = make_eval_iterator(task.dataset(split), task.spec,
                          batch_size=batch_size // jax.process_count(),
                          shard_index=jax.process_index(), shard_count=jax.process_count())
  outs = []
  for i, batch in enumerate(it):
    if max_batches and i >= max_batches:
      break
    outs.append(eval_step(params, mesh_lib.global_batch(batch, batch_sharding)))
  sums = None
  for out in jax.device_get(outs):
    sums = losses.add_sums(sums, out)
  if sums is None:
    raise UserError(f'split {split!r} of task {task.spec.name!r} is empty')
  return losses.finalize(task.spec.kind, sums, task.spec.metrics)


def _meta(config, model_cfg: ModelConfig, task) -> dict[str, Any]:
  return {'config': configuration.config_to_dict(config), 'model_cfg': model_cfg.to_dict(),
          'task': {'spec': dataclasses.asdict(task.spec), 'metadata': task.metadata}}


def _saved_meta(ckpt: Checkpointer) -> dict | None:
  for step in reversed(ckpt.all_steps()):
    try:
      return ckpt.restore_meta(step)
    except Exception:  # pylint: disable=broad-except
      continue  # restore_latest reports and skips unreadable steps
  return None


def train(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in ``workdir``; returns the final metrics
  (``{'validation': ..., 'test': ...}``; ``{'preempted': step}`` after SIGTERM)."""
  configuration.check_config(config)
  mesh_lib.maybe_initialize_distributed(config.multihost)
  task = open_task(config, saved_task_metadata(workdir))
  spec = task.spec
  model_cfg = configuration.model_config(config, spec)
  mesh = mesh_lib.make_mesh(config.num_devices)
  configuration.check_devices(config, mesh.size, jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0

  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=config.keep_checkpoints,
                      best_metric=spec.eval_metric,
                      larger_is_better=spec.eval_metric_larger_is_better,
                      async_save=config.async_checkpoint)
  saved = _saved_meta(ckpt)
  if saved is not None:
    configuration.check_same_shape(saved['model_cfg'], model_cfg, workdir)
  meta = _meta(config, model_cfg, task)

  model = build_model(model_cfg)
  optimizer, schedule = opt_lib.make_optimizer(config)
  init_fn = lambda: init_state(model_cfg, optimizer, config.seed)
  abstract = jax.eval_shape(init_fn)
  shardings = mesh_lib.state_shardings(abstract, mesh, config.fsdp, config.fsdp_min_size)
  batch_sh, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)

  restored = ckpt.restore_latest(
      abstract_with(abstract.params, shardings.params),
      abstract_with({'step': abstract.step, 'opt_state': abstract.opt_state,
                     'rng': abstract.rng},
                    {'step': shardings.step, 'opt_state': shardings.opt_state,
                     'rng': shardings.rng}))
  if restored is not None:
    start, got = restored
    state = TrainState(step=got['opt']['step'], params=got['params'],
                       opt_state=got['opt']['opt_state'], rng=got['opt']['rng'])
    data_state = got['data']
    logging.info('resumed from %s step %d', ckpt.directory, start)
  else:
    start, data_state = 0, None
    state = jax.jit(init_fn, out_shardings=shardings)()
  logging.info('task %s (%s), model %s: %d parameters, %d device(s), %d process(es)',
               spec.name, spec.kind, model_cfg.model, param_count(state.params), mesh.size,
               jax.process_count())

  train_iter = make_iterator(task.dataset('train'), spec,
                             batch_size=config.batch_size // jax.process_count(),
                             seed=config.seed, shard_index=jax.process_index(),
                             shard_count=jax.process_count())
  if data_state is not None:
    try:
      train_iter.set_state(data_state)
    except ValueError as err:
      raise UserError(f'cannot resume the data stream in {workdir}: {err}') from None

  train_step = jax.jit(
      make_train_step(model, spec.kind, model_cfg.num_classes, optimizer, schedule,
                      config.grad_accum_steps, config.nan_at_step),
      in_shardings=(shardings, batch_sh), out_shardings=(shardings, repl),
      donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, spec.kind, model_cfg.num_classes),
                      in_shardings=(shardings.params, batch_sh), out_shardings=repl)
  eval_bs = config.eval_batch_size or config.batch_size
  has_val = 'validation' in spec.splits and config.eval_every > 0

  writer = MetricsWriter(workdir, enabled=lead, total_steps=config.num_steps,
                         start_step=start, tensorboard=config.tensorboard)
  if lead and start == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(meta, f, indent=1)

  pending: list[Any] = []
  window = {'t0': time.perf_counter(), 'tokens': 0}

  def flush(step: int) -> None:
    """Writes the train metrics since the last flush; stops on a non-finite loss."""
    if not pending:
      return
    got = jax.device_get(pending)
    first = step - len(got) + 1
    for i, m in enumerate(got):
      if not (np.isfinite(m['loss_sum']) and np.isfinite(m['grad_norm'])):
        ckpt.wait()
        raise NonFiniteLossError(
            f'loss became {float(m["loss_sum"])} at step {first + i} (gradient norm '
            f'{float(m["grad_norm"])}); stopped. The last good checkpoint, step '
            f'{ckpt.latest_step()}, is kept in {ckpt.directory}')
    sums = None
    for m in got:
      sums = losses.add_sums(sums, {k: v for k, v in m.items()
                                    if k not in ('grad_norm', 'lr')})
    elapsed = time.perf_counter() - window['t0']
    metrics = losses.finalize(spec.kind, sums, spec.metrics)
    metrics.update(grad_norm=float(np.mean([m['grad_norm'] for m in got])),
                   lr=float(got[-1]['lr']), step_time=elapsed / len(got),
                   tokens_per_sec=window['tokens'] / max(elapsed, 1e-9))
    writer.write(step, 'train', metrics)
    pending.clear()
    window.update(t0=time.perf_counter(), tokens=0)

  def save(step: int, metrics: dict | None = None) -> None:
    ckpt.save(step, state, train_iter.get_state(), meta, metrics)

  step = start
  result: dict[str, Any] = {}
  with _Preemption() as preempt:
    try:
      while step < config.num_steps:
        if preempt.requested:
          flush(step)
          save(step)
          logging.warning('SIGTERM: saved step %d in %s; rerun the same command to '
                          'resume', step, ckpt.directory)
          result = {'preempted': step}
          break
        batch = next(train_iter)
        window['tokens'] += int(batch['mask'].sum())
        state, metrics = train_step(state, mesh_lib.global_batch(batch, batch_sh))
        pending.append(metrics)
        step += 1
        writer.advance()
        last = step == config.num_steps
        do_eval = has_val and (step % config.eval_every == 0 or last)
        do_save = do_eval or last or step % config.checkpoint_every == 0
        if do_save or step % config.log_every == 0:
          flush(step)
        if do_eval:
          t_eval = time.perf_counter()
          val = evaluate_params(eval_step, state.params, task, 'validation', eval_bs,
                                batch_sh, config.eval_steps)
          writer.write(step, 'validation', val)
          result['validation'] = val
          # Evaluation is not training time; checkpointing (below) is, and stays counted.
          window['t0'] += time.perf_counter() - t_eval
        if do_save:
          save(step, val if do_eval else None)
        if step == config.kill_at_step:
          os.kill(os.getpid(), signal.SIGKILL)
    finally:
      # Let an in-flight async save finish so the last good checkpoint is complete.
      ckpt.wait()

  if 'preempted' in result:
    writer.close()
    ckpt.close()
    return result
  if 'test' in spec.splits:
    best = ckpt.best_step() if has_val else None
    which = best if best is not None else ckpt.latest_step()
    params = state.params
    if which is not None and which != step:
      params, _ = ckpt.restore_params(which, abstract_with(abstract.params,
                                                           shardings.params))
    test = evaluate_params(eval_step, params, task, 'test', eval_bs, batch_sh)
    test['checkpoint_step'] = which if which is not None else step
    writer.write(step, 'test', test)
    result['test'] = test
  writer.close()
  ckpt.close()
  return result


def load_for_inference(workdir: str, which: str | int = 'best'):
  """``(model, model_cfg, params, meta, step)`` from ``workdir``'s checkpoint ``which``
  (``best``/``latest``/a step), restoring parameters only (no optimizer state)."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoints in {directory}; train first with experiments/train.py '
                    f'--workdir={workdir}')
  best = None
  cfg_path = os.path.join(workdir, 'config.json')
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      spec = json.load(f)['task']['spec']
    best = (spec['eval_metric'], spec['eval_metric_larger_is_better'])
  ckpt = Checkpointer(directory, best_metric=best[0] if best else 'loss',
                      larger_is_better=best[1] if best else False, read_only=True)
  try:
    step = ckpt.resolve(which)
  except ValueError as err:
    raise UserError(str(err)) from None
  meta = ckpt.restore_meta(step)
  model_cfg = ModelConfig.from_mapping(meta['model_cfg'])
  model = build_model(model_cfg)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               *example_inputs(model_cfg))['params'])
  repl = mesh_lib.replicated(mesh_lib.make_mesh(1))
  params, _ = ckpt.restore_params(step, abstract_with(
      abstract, jax.tree.map(lambda _: repl, abstract)))
  ckpt.close()
  return model, model_cfg, params, meta, step
