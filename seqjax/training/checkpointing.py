"""Orbax checkpoints: one ``CheckpointManager`` step directory holds four items,

* ``params``  — the model parameters (all evaluation and generation need);
* ``opt``     — ``{'step', 'opt_state', 'rng'}`` (only resuming training needs it);
* ``data``    — the training data iterator's state, JSON;
* ``meta``    — the resolved experiment config, model config and task metadata (e.g. a
  tokenizer's vocabulary), JSON;

saved together with ``ocp.args.Composite`` (asynchronously by default). Retention keeps the
last ``keep`` steps *and* the best step by the evaluation metric: a ``BestN`` policy alone
can delete the latest step, so an ``AnyPreservationPolicy`` ORs ``LatestN`` with
``BestN``. Orbax writes each step into a temporary directory and renames it on commit, so a
run killed mid-save leaves no half-written step; a step whose files were damaged afterwards
fails to restore, is moved aside to ``<step>.corrupt`` with a warning, and the previous
step is restored instead.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

ITEMS = ('params', 'opt', 'data', 'meta')


class Checkpointer:
  """Save / restore train state, data-iterator state and metadata under ``directory``."""

  def __init__(self, directory: str, *, keep: int = 2, best_metric: str = 'loss',
               larger_is_better: bool = False, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    sign = 1.0 if larger_is_better else -1.0
    # BestN keeps the *largest* values; negate metrics where smaller is better.
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=max(int(keep), 1)),
        pp.BestN(get_metric_fn=lambda m: sign * float(m[best_metric]), n=1,
                 keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=lambda m: float(m[best_metric]),
        best_mode='max' if larger_is_better else 'min',
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        read_only=read_only, create=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  # ------------------------------------------------------------------------ queries

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  # ------------------------------------------------------------------------ save

  def save(self, step: int, state, data_state: dict[str, Any], meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Saves ``state`` (a ``TrainState``) at ``step``; ``metrics`` (if given) must hold the
    best-checkpoint metric."""
    opt = {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}
    args = ocp.args.Composite(params=ocp.args.StandardSave(state.params),
                              opt=ocp.args.StandardSave(opt),
                              data=ocp.args.JsonSave(data_state),
                              meta=ocp.args.JsonSave(meta))
    if metrics is not None:
      metrics = {self.best_metric: float(metrics[self.best_metric])}
    self.manager.save(int(step), args=args, metrics=metrics, force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # ------------------------------------------------------------------------ restore

  def _quarantine(self, step: int, err: Exception) -> None:
    logging.warning('checkpoint step %d in %s is unreadable (%s: %s); skipping it and '
                    'trying the previous one', step, self.directory, type(err).__name__,
                    str(err).splitlines()[0][:200] if str(err) else '')
    path = os.path.join(self.directory, str(step))
    if os.path.isdir(path) and not self.manager._options.read_only:  # pylint: disable=protected-access
      os.replace(path, path + '.corrupt')
      self.manager.reload()

  def restore_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        'meta']

  def restore_latest(self, abstract_params, abstract_opt) -> tuple[int, dict] | None:
    """The newest readable step: ``(step, {'params', 'opt', 'data', 'meta'})``, or None.

    ``abstract_*`` are pytrees of ``jax.ShapeDtypeStruct`` with shardings (the restore
    target). Unreadable steps are skipped with a warning.
    """
    for step in reversed(self.all_steps()):
      try:
        got = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt=ocp.args.StandardRestore(abstract_opt),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return step, dict(got)
      except Exception as err:  # pylint: disable=broad-except
        self._quarantine(step, err)
    return None

  def resolve(self, which: str | int) -> int:
    """``'best'`` / ``'latest'`` / a step number -> a saved step (ValueError if none)."""
    steps = self.all_steps()
    if not steps:
      raise ValueError(f'no checkpoint in {self.directory}; train first (experiments/'
                       'train.py --workdir=...)')
    if which == 'latest':
      return steps[-1]
    if which == 'best':
      best = self.best_step()
      return steps[-1] if best is None else best
    try:
      step = int(which)
    except (TypeError, ValueError):
      raise ValueError(f'checkpoint={which!r} is not valid; use best, latest or one of the '
                       f'saved steps {steps}') from None
    if step not in steps:
      raise ValueError(f'checkpoint={step} is not saved in {self.directory}; saved steps: '
                       f'{steps}')
    return step

  def restore_params(self, step: int, abstract_params=None) -> tuple[Any, dict]:
    """Parameters and metadata only (no optimizer state) of ``step``."""
    got = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
    return got['params'], got['meta']
