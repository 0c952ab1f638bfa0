"""The one trainer: ``train(config, workdir)`` for every task kind and model family.

Flow (nanodo / flax-examples style): check the config -> make sure the workdir is writable
and lock it (one writer per workdir) -> open the task -> build the ``ModelConfig`` and model
-> mesh and shardings -> restore the newest *verified* checkpoint (params, optimizer state,
rng, data-iterator state, the open metrics window) or initialise -> loop over
``num_steps`` jitted, buffer-donating train steps, writing a train line every
``log_every``, evaluating on the validation split every ``eval_every`` and checkpointing
every ``checkpoint_every`` (and at every evaluation, with its metric, for best-checkpoint
retention) -> final test evaluation on the best checkpoint, once per run.

Step metrics stay on the device until the next line/checkpoint boundary, so the host never
waits for the device inside the loop; at the boundary a NaN/Inf loss or gradient norm
stops the run with ``NonFiniteLossError`` naming the quantity and the step, *before*
anything after it is saved. Rerunning the same command on the same workdir resumes exactly
where the last checkpoint left off; a damaged newest checkpoint is moved aside and the
previous good one used (one warning line); when none is good the run stops
(``DamagedCheckpointError``) and only ``config.restart=True`` starts it over. SIGTERM
(pre-emption, ``seqjax.training.preemption``) stops the loop at the next step boundary,
saves that step unless it is saved already, and ``train`` returns normally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from seqjax.data.pipeline import make_iterator
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, example_inputs
from seqjax.training import configuration, fault_injection, losses, mesh as mesh_lib
from seqjax.training import multihost, optimizer as opt_lib, resume
from seqjax.training.checkpointing import Checkpointer, brief, fallback_warning
from seqjax.training.errors import (DamagedCheckpointError, NonFiniteLossError, Preempted,
                                    UserError)
from seqjax.training.metrics_writer import MetricsWriter, TrainWindow, has_line
from seqjax.training.preemption import PREEMPTION
from seqjax.training.state import TrainState, init_state, param_count
from seqjax.training.steps import make_eval_step, make_train_step
from seqjax.training.tasks import (CHECKPOINT_DIR, abstract_with, evaluate_params,
                                   open_split, open_task, saved_task_metadata)
from seqjax.training.workdir import WorkdirLock, ensure_writable
from seqjax.utils.xla import compiled_quickly


def _meta(config, model_cfg: ModelConfig, task) -> dict[str, Any]:
  return {'config': configuration.config_to_dict(config), 'model_cfg': model_cfg.to_dict(),
          'task': {'spec': dataclasses.asdict(task.spec), 'metadata': task.metadata}}


def _write_json_atomically(path: str, obj: Any) -> None:
  with open(f'{path}.tmp', 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(f'{path}.tmp', path)


def _non_finite_error(kind: str, step: int, m: dict,
                      ckpt: Checkpointer) -> NonFiniteLossError:
  """The NaN/Inf stop: which quantity, at which step, and what checkpoint is kept."""
  loss = losses.finalize(kind, losses.add_sums(
      None, {k: v for k, v in m.items() if k not in ('grad_norm', 'lr')}))['loss']
  grad = float(m['grad_norm'])
  what = (f'the loss became {loss} at step {step} (gradient norm {grad})'
          if not np.isfinite(loss) else
          f'the gradient norm became {grad} at step {step} (loss {loss:.6g})')
  ckpt.wait()
  newest = ckpt.latest_step()
  kept = (f'the newest checkpoint, step {newest}, is kept in {ckpt.directory}'
          if newest is not None else 'no checkpoint was saved yet')
  return NonFiniteLossError(
      f'{what}; stopped before saving it: {kept}. Lower --config.learning_rate, raise '
      '--config.warmup_steps or set --config.grad_clip')


def _close_at_exit(stack: contextlib.ExitStack, close) -> None:
  """``close()`` when ``stack`` unwinds; if an error is already on its way out, a failure
  to close (e.g. on the same full disk) must not replace it."""

  def exit_fn(exc_type, exc, tb):  # pylint: disable=unused-argument
    try:
      close()
    except Exception:  # pylint: disable=broad-except
      if exc_type is None:
        raise
    return False

  stack.push(exit_fn)


def train(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in ``workdir``; returns the final metrics
  (``{'validation': ..., 'test': ...}``), or after SIGTERM ``{'preempted': step,
  'saved': step or None, 'message': ...}``."""
  configuration.check_config(config)
  multihost.initialize(config)
  lead = jax.process_index() == 0
  with contextlib.ExitStack() as stack:
    stack.enter_context(PREEMPTION.handling())

    def claim_workdir():  # before any data is prepared; one lock for the whole job
      if lead:
        ensure_writable(workdir)
        stack.enter_context(WorkdirLock(workdir, processes=jax.process_count()))
        # Orbax's CheckpointManager syncs all processes at points that depend on whether
        # the directory exists (a read-only one, for the saved tokenizer, only if it
        # does): made here, before any process looks, every process takes the same path.
        # (A slow process 1 once found the directory process 0 had just created and
        # met it at a different barrier: "sync_global_devices name mismatch".)
        os.makedirs(os.path.join(workdir, CHECKPOINT_DIR), exist_ok=True)

    multihost.lead_first('workdir', claim_workdir, what='locking the workdir',
                         interrupt=PREEMPTION.check)
    try:
      return _train(config, workdir, lead, stack)
    except Exception as err:  # pylint: disable=broad-except
      if multihost.is_peer_loss(err):
        raise multihost.peer_failure(err) from err
      raise
    except Preempted:
      return {'preempted': None, 'saved': None,
              'message': 'pre-empted before the first step: nothing new was saved; rerun '
                         'the same command to continue'}


def _train(config, workdir: str, lead: bool, stack: contextlib.ExitStack) -> dict[str, Any]:
  task = open_task(config, saved_task_metadata(workdir))
  spec = task.spec
  model_cfg = configuration.model_config(config, spec)
  configuration.check_device_count(config, jax.device_count())
  mesh = mesh_lib.make_mesh(config.num_devices)
  configuration.check_devices(config, mesh.size, jax.process_count())

  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=config.keep_checkpoints,
                      best_metric=spec.eval_metric,
                      larger_is_better=spec.eval_metric_larger_is_better,
                      async_save=config.async_checkpoint)
  _close_at_exit(stack, ckpt.manager.close)
  saved = None if config.get('restart', False) else resume.saved_meta(ckpt)
  if saved is not None:
    configuration.check_same_shape(saved['model_cfg'], model_cfg, workdir)
  meta = _meta(config, model_cfg, task)

  model = build_model(model_cfg)
  optimizer, schedule = opt_lib.make_optimizer(config)
  init_fn = lambda: init_state(model_cfg, optimizer, config.seed)
  abstract = jax.eval_shape(init_fn)
  shardings = mesh_lib.state_shardings(abstract, mesh, config.fsdp, config.fsdp_min_size)
  batch_sh, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  abstract_params = abstract_with(abstract.params, shardings.params)

  start, got = resume.restore_or_start(
      ckpt, config, abstract_params,
      abstract_with({'step': abstract.step, 'opt_state': abstract.opt_state,
                     'rng': abstract.rng},
                    {'step': shardings.step, 'opt_state': shardings.opt_state,
                     'rng': shardings.rng}))
  if got is not None:
    state = TrainState(step=got['opt']['step'], params=got['params'],
                       opt_state=got['opt']['opt_state'], rng=got['opt']['rng'])
    data_state, progress = got['data'], got.get('progress')
    logging.info('resumed from %s step %d', ckpt.directory, start)
  else:
    data_state = progress = None
    state = compiled_quickly(jax.jit(init_fn, out_shardings=shardings))()  # runs once
  logging.info('task %s (%s), model %s: %d parameters, %d device(s), %d process(es)',
               spec.name, spec.kind, model_cfg.model, param_count(state.params), mesh.size,
               jax.process_count())

  with PREEMPTION.interruptible():  # the first use prepares the data: may take long
    # One writer: process 0 prepares into the (possibly shared) data_dir, the others
    # open what it wrote.
    train_source = multihost.lead_first(
        'prepare', lambda: open_split(task, 'train'), what='preparing the data',
        interrupt=PREEMPTION.check)
  try:
    shard = mesh_lib.process_rows(batch_sh, config.batch_size)
  except ValueError as err:
    raise UserError(str(err)) from None
  train_iter = make_iterator(train_source, spec, batch_size=config.batch_size,
                             seed=config.seed, shard_index=shard[0], shard_count=shard[1])
  if data_state is not None:
    try:
      train_iter.set_state(resume.data_state_of_process(data_state, jax.process_index()))
    except ValueError as err:
      raise UserError(f'cannot resume the data stream in {workdir}: {err}') from None

  train_step = jax.jit(
      make_train_step(model, spec.kind, model_cfg.num_classes, optimizer, schedule,
                      config.grad_accum_steps, fault_injection.nan_at_step()),
      in_shardings=(shardings, batch_sh), out_shardings=(shardings, repl),
      donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, spec.kind, model_cfg.num_classes),
                      in_shardings=(shardings.params, batch_sh), out_shardings=repl)
  eval_bs = config.eval_batch_size or config.batch_size
  has_val = 'validation' in spec.splits and config.eval_every > 0

  writer = MetricsWriter(workdir, enabled=lead, total_steps=config.num_steps,
                         start_step=start, tensorboard=config.tensorboard)
  _close_at_exit(stack, writer.close)
  if lead and start == 0:
    _write_json_atomically(os.path.join(workdir, 'config.json'), meta)
  PREEMPTION.check()  # SIGTERM during the set-up: stop before any step

  window = TrainWindow(progress)
  pending: list[Any] = []  # device metrics of the steps since the last collect()
  tokens = [0]
  # A process sees only its rows: with several, the global batch's tokens are counted on
  # the devices (a sum beside the step), so tokens_per_sec is the whole job's.
  count_tokens = (jax.jit(lambda mask: mask.sum(dtype=np.int32), out_shardings=repl)
                  if shard[1] > 1 else None)

  def collect(step: int) -> None:
    """Host copies of the pending step metrics into the window; stops on NaN/Inf."""
    if not pending:
      return
    got = jax.device_get(pending)
    tokens[0] += sum(int(m.pop('tokens', 0)) for m in got)
    first = step - len(got) + 1
    for i, m in enumerate(got):
      if not (np.isfinite(m['loss_sum']) and np.isfinite(m['grad_norm'])):
        raise _non_finite_error(spec.kind, first + i, m, ckpt)
    window.add(got, tokens[0])
    pending.clear()
    tokens[0] = 0

  def save(step: int, metrics: dict | None = None) -> None:
    # Every process's iterator state, in process order (saved by process 0).
    data = resume.data_states(multihost.gather_json('data_state', train_iter.get_state()))
    ckpt.save(step, state, data, meta, metrics, progress=window.state())

  step = start
  result: dict[str, Any] = {}
  kill_at, term_at = fault_injection.kill_at_step(), fault_injection.term_at_step()
  try:
    while step < config.num_steps:
      if PREEMPTION.should_stop(step):
        collect(step)
        if step > start and ckpt.latest_step() != step:  # never save a step twice
          save(step)
        ckpt.wait()
        newest = ckpt.latest_step()
        kept = f'newest checkpoint: step {newest}' if newest is not None else 'none yet'
        result = {'preempted': step, 'saved': newest if step > start else None,
                  'message': (f'pre-empted: saved step {newest}; rerun to resume'
                              if step > start else
                              f'pre-empted before the first step: nothing new was saved '
                              f'({kept}); rerun the same command to continue')}
        break
      rows = next(train_iter)
      batch = mesh_lib.global_batch(rows, batch_sh)
      state, metrics = train_step(state, batch)
      if count_tokens is None:
        tokens[0] += int(rows['mask'].sum())
      else:
        metrics = dict(metrics, tokens=count_tokens(batch['mask']))
      pending.append(metrics)
      step += 1
      writer.advance()
      ckpt.poll()  # a failed background save is reported within one step
      last = step == config.num_steps
      do_eval = has_val and (step % config.eval_every == 0 or last)
      do_save = do_eval or last or step % config.checkpoint_every == 0
      do_line = do_eval or last or step % config.log_every == 0
      if do_save or do_line:
        collect(step)
      line = window.take(spec.kind, spec.metrics) if do_line else None
      if line:
        writer.write(step, 'train', line)
      if do_eval:
        t_eval = time.perf_counter()
        val = evaluate_params(eval_step, state.params, task, 'validation', eval_bs,
                              batch_sh, config.eval_steps)
        writer.write(step, 'validation', val)
        result['validation'] = val
        # Evaluation is not training time; checkpointing (below) is, and stays counted.
        window.exclude(time.perf_counter() - t_eval)
      if do_save:
        save(step, val if do_eval else None)
      if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      if step == term_at:
        os.kill(os.getpid(), signal.SIGTERM)
  except BaseException:
    # Let a save in flight finish so the newest checkpoint is complete; its own failure
    # must not hide the error that got us here.
    with contextlib.suppress(Exception):
      ckpt.wait()
    raise
  ckpt.wait()
  if 'preempted' in result or 'test' not in spec.splits:
    return result
  try:
    result['test'] = _final_test(ckpt, has_val, state.params, step, abstract_params,
                                 eval_step, task, eval_bs, batch_sh, writer, workdir)
  except Preempted:
    return {'preempted': step, 'saved': ckpt.latest_step(),
            'message': f'pre-empted during the final test evaluation: training is complete '
                       f'(step {step} saved); rerun to evaluate'}
  return result


def _final_test(ckpt, has_val, params, step, abstract_params, eval_step, task, eval_bs,
                batch_sh, writer, workdir) -> dict[str, float]:
  """Test metrics of the best (else the latest) checkpoint, written once per run: a
  rerun of a finished run returns the recorded line and writes nothing."""
  recorded = has_line(workdir, step, 'test')
  if recorded is not None:
    logging.info('the test line of step %d is written already; nothing to do', step)
    return {k: v for k, v in recorded.items() if k not in ('step', 'split')}
  best = ckpt.best_step() if has_val else None
  which = best if best is not None else ckpt.latest_step()
  with PREEMPTION.interruptible():
    if which is not None and which != step:
      try:
        params = ckpt.restore(which, abstract_params)['params']
      except Exception as err:  # pylint: disable=broad-except
        why = str(err) if isinstance(err, DamagedCheckpointError) else brief(err)
        fallback_warning(ckpt.directory, [(which, why)], step, 'testing the final')
        which = step
    test = evaluate_params(eval_step, params, task, 'test', eval_bs, batch_sh)
  test['checkpoint_step'] = which if which is not None else step
  writer.write(step, 'test', test)
  return test


def load_for_inference(workdir: str, which: str | int = 'best'):
  """``(model, model_cfg, params, meta, step)`` from ``workdir``'s checkpoint ``which``
  (``best``/``latest``/a step), restoring parameters only (no optimizer state).

  A damaged ``best``/``latest`` falls back to the next good step with one warning line;
  an explicitly numbered damaged step, or no good step at all, is a
  ``DamagedCheckpointError``.
  """
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoints in {directory}; train first with python -m '
                    f'experiments.train --workdir={workdir}')
  probe = Checkpointer(directory, read_only=True)
  steps, meta = probe.all_steps(), resume.saved_meta(probe)
  probe.close()
  if not steps:
    raise UserError(f'no checkpoint in {directory}; train first with python -m '
                    f'experiments.train --workdir={workdir}')
  if meta is None:
    raise DamagedCheckpointError(f'no readable checkpoint in {directory}: every step is '
                                 'damaged')
  spec = meta['task']['spec']  # not config.json: the checkpoints must be enough
  model_cfg = ModelConfig.from_mapping(meta['model_cfg'])
  model = build_model(model_cfg)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               *example_inputs(model_cfg))['params'])
  repl = mesh_lib.replicated(mesh_lib.make_mesh(1))
  ckpt = Checkpointer(directory, best_metric=spec['eval_metric'],
                      larger_is_better=spec['eval_metric_larger_is_better'], read_only=True)
  try:
    candidates = ckpt.candidates(which)
    step, got, refused = ckpt.restore_first_good(candidates, abstract_with(
        abstract, jax.tree.map(lambda _: repl, abstract)))
  except ValueError as err:
    raise UserError(str(err)) from None
  finally:
    ckpt.close()
  if refused:
    fallback_warning(directory, refused, step, 'using')
  return model, model_cfg, got['params'], got['meta'], step

