"""Training for the comparison report: one *cell* = one (task setting, family) pair.

A cell trains the family with every seed and every learning rate of the suite's grid
(``seqjax.training.sweep``: one compile for the whole grid), each member until its
validation score reaches the task's criterion or the step budget runs out. The learning
rate is chosen on validation (``sweep.select_learning_rate``), and the cell reports the
*test* scores of that rate's seeds, all of them: nothing is picked per seed.

Every family in a comparison gets the same budget, batch, schedule, grid and seeds, and a
width matched to the same parameter count (or, for width sweeps, the same width), so the
differences come from the architecture. ``train_run`` (one seed, one rate, checkpoints
kept on request) remains for experiments that inspect a trained model.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from typing import Any, Sequence

from absl import logging
import ml_collections

from experiments.comparison import cells, stats
from experiments.comparison.measure import OUT_OF_MEMORY, ran_out_of_memory
from experiments.comparison.scoring import SOLVED, Scoring, scoring_for
from seqjax.data.registry import get_task
from seqjax.models.config import ModelConfig
from seqjax.models.flops import forward_flops_per_token
from seqjax.models.sizing import match_d_model, param_count
from seqjax.training import loop, tasks
from seqjax.training.sweep import select_learning_rate, train_sweep


@functools.lru_cache(maxsize=None)
def matched_d_model(family: str, fields: tuple, target_params: int, max_d_model: int) -> int:
  base = ModelConfig(model=family, **dict(fields))
  return match_d_model(base, target_params, max_d_model=max_d_model).d_model


# The keyword arguments of ``experiment_config`` a cell job may carry.
CONFIG_KEYS = ('task_options', 'model_overrides', 'target_params', 'd_model',
               'batch_size', 'learning_rate', 'max_d_model', 'num_train',
               'num_validation', 'num_test', 'max_len', 'eval_every', 'config_name')


def experiment_config(task: str, family: str, *, steps: int, seed: int = 0,
                      task_options: dict[str, Any] | None = None,
                      model_overrides: dict[str, Any] | None = None,
                      target_params: int | None = None, d_model: int | None = None,
                      batch_size: int = 32, learning_rate: float = 3e-3,
                      max_d_model: int = 4096, num_train: int = 4000,
                      num_validation: int = 256, num_test: int = 512,
                      max_len: int | None = None, eval_every: int = 0,
                      config_name: str | None = None) -> ml_collections.ConfigDict:
  """The trainer config of one comparison run.

  Settings start from ``experiments/configs/<config_name or task>.py`` (``base`` suits
  tasks without a file of their own, such as ``csv``). The width is ``d_model`` when given,
  else matched to ``target_params``. An option set to ``None`` in ``task_options`` is
  removed (the split sizes, for tasks whose splits are fixed). ``max_len`` (default: the
  task's longest sequence) bounds the lengths the model can be evaluated at.
  """
  config = importlib.import_module(
      f'experiments.configs.{config_name or task}').get_config()
  config.task = task
  options = {**config.task_options.to_dict(), 'num_train': num_train,
             'num_validation': num_validation, 'num_test': num_test,
             **(task_options or {})}
  config.task_options = ml_collections.ConfigDict(
      {k: v for k, v in options.items() if v is not None})
  spec = get_task(config.task, data_dir=config.data_dir or None, seed=seed,
                  **config.task_options.to_dict()).spec
  overrides = dict(model_overrides or {})
  length = max(spec.max_len, spec.max_target_len, max_len or 0, 8)
  if d_model is None:
    fields = {**config.model_cfg.to_dict(), **overrides, **spec.model_fields(),
              'max_len': length}
    fields.pop('d_model')
    d_model = matched_d_model(family, tuple(sorted(fields.items())), target_params,
                              max_d_model)
  config.model = family
  for key, value in {**overrides, 'd_model': d_model, 'max_len': length}.items():
    config.model_cfg[key] = value
  config.update(seed=seed, num_steps=steps, batch_size=batch_size,
                learning_rate=learning_rate, warmup_steps=max(steps // 10, 1),
                eval_every=eval_every, log_every=max(steps // 4, 1),
                checkpoint_every=steps, async_checkpoint=False, tensorboard=False)
  return config


def resolved_model(config, spec) -> ModelConfig:
  return ModelConfig.from_mapping({**config.model_cfg.to_dict(), 'model': config.model,
                                   **spec.model_fields()})


def job_params(job: dict[str, Any]) -> int:
  """Parameters of the model a ``train_cell`` job would train (nothing is trained or
  generated: the task's spec only)."""
  config = experiment_config(job['task'], job['family'], steps=job.get('steps', 1),
                             **{k: v for k, v in job.items() if k in CONFIG_KEYS})
  spec = get_task(config.task, data_dir=config.data_dir or None, seed=config.seed,
                  **config.task_options.to_dict()).spec
  return param_count(resolved_model(config, spec))


def train_run(task: str, family: str, *, workdir: str, target_params: int, steps: int,
              seed: int, keep_checkpoints: bool = False, **kwargs) -> dict[str, Any]:
  """Trains one seed with ``loop.train`` and returns its test metrics and settings.

  ``kwargs`` go to ``experiment_config``. The workdir's checkpoints are removed afterwards
  unless ``keep_checkpoints`` (``loop.load_for_inference(workdir)`` reloads a kept run);
  pass a fresh ``workdir`` per run."""
  config = experiment_config(task, family, steps=steps, seed=seed,
                             target_params=target_params, **kwargs)
  result = loop.train(config, workdir)
  task_obj = tasks.open_task(config)
  spec = task_obj.spec
  if not keep_checkpoints:
    shutil.rmtree(os.path.join(workdir, loop.CHECKPOINT_DIR), ignore_errors=True)
  return {'task': task, 'family': family, 'd_model': config.model_cfg.d_model,
          'params': param_count(resolved_model(config, spec)), 'steps': steps,
          'seq_len': spec.max_len, 'seed': seed, 'metric': spec.eval_metric,
          'larger_is_better': spec.eval_metric_larger_is_better,
          'value': float(result['test'][spec.eval_metric]), **{
              f'test_{k}': float(v) for k, v in result['test'].items()
              if isinstance(v, (int, float))}}


def train_cell(task: str, family: str, *, seeds: Sequence[int],
               learning_rates: Sequence[float], steps: int, eval_every: int,
               scoring: Scoring | None = None, solved: float | None = SOLVED,
               chance: float | None = None,
               extra_tests: dict[str, dict[str, Any]] | None = None,
               keep_params: bool = False, lr_selection: str = 'all_seeds',
               **kwargs) -> dict[str, Any]:
  """Trains one cell (every seed x learning rate) and returns its record.

  ``kwargs`` go to ``experiment_config`` (task options, model overrides, width or
  parameter target, batch...). ``solved=None`` trains every member for the whole budget
  (no criterion). ``lr_selection``: ``'all_seeds'`` trains every seed with every rate and
  chooses on the mean over seeds; ``'first_seed'`` chooses on the first seed alone and
  trains the other seeds with that rate only (``len(seeds) + len(rates) - 1`` runs instead
  of the product). The record holds the chosen rate's test score per seed (``scores``),
  their spread, the steps each seed took to the criterion (None = not reached), its
  validation curves, the extra tests' scores per seed, every member of the grid
  (``members``) and the resolved ``model_cfg``, so that nothing measured is lost. ``keep_params`` adds the chosen rate's
  best parameters per seed (``params_by_seed``, for analysis; pop it before saving).
  """
  scoring = scoring or scoring_for(task)
  config = experiment_config(task, family, steps=steps, seed=seeds[0],
                             eval_every=eval_every, **kwargs)
  criterion = scoring.criterion(solved) if solved is not None else None
  if lr_selection not in ('all_seeds', 'first_seed'):
    raise ValueError(f'lr_selection={lr_selection!r}: choose all_seeds or first_seed')
  choose = lambda members: select_learning_rate(members, scoring.score, criterion, steps)
  try:
    sweep = train_sweep(config, seeds, learning_rates, criterion, extra_tests=extra_tests,
                        keep_params=keep_params,
                        select=choose if lr_selection == 'first_seed' else None,
                        skip_extra_error=ran_out_of_memory)
  except Exception as error:  # pylint: disable=broad-except
    if not ran_out_of_memory(error):
      raise
    # The papers' sizes on a small device: an outcome of this cell, not of the report.
    logging.warning('cell %s/%s: out of memory, recorded as such: %s', task, family,
                    str(error).splitlines()[0])
    return out_of_memory_record(task, family, config, criterion, scoring, chance,
                                learning_rates, seeds, lr_selection, extra_tests, error)
  chosen = sweep.chosen_learning_rate or choose(sweep.members)
  best = [m for m in sweep.members if m.learning_rate == chosen]
  scores = [scoring.score(m.test) if m.test else float('nan') for m in best]
  reached = [m.steps_to_criterion for m in best]
  record = {
      **_planned(task, family, sweep.model_cfg, sweep.spec, steps, sweep.batch_size,
                 criterion, learning_rates, lr_selection, seeds,
                 chance if chance is not None else scoring.chance(
                     config.task_options.to_dict())),
      'learning_rate': chosen, 'scores': scores, 'test_metrics': [m.test for m in best],
      'score_mean': stats.spread(scores)['mean'], 'score_min': stats.spread(scores)['min'],
      'score_max': stats.spread(scores)['max'],
      'test_examples': sweep.test_examples,
      'steps_to_criterion': reached,
      'reached': sum(r is not None for r in reached),
      'curves': {m.seed: [(step, scoring.score(v)) for step, v in m.curve] for m in best},
      'extra_scores': {name: [_score_or_none(scoring, m.extra_tests[name]) for m in best]
                       for name in (extra_tests or {})},
      # The extra test lengths whose evaluation did not fit in memory (scores None).
      'extra_status': {name: OUT_OF_MEMORY for name in (extra_tests or {})
                       if any(m.extra_tests[name] is None for m in best)},
      'members': [{'seed': m.seed, 'learning_rate': m.learning_rate, 'steps': m.steps,
                   'steps_to_criterion': m.steps_to_criterion,
                   'diverged_at': m.diverged_at,
                   'validation_score': scoring.score(m.validation) if m.validation
                   else float('nan'),
                   'test_score': scoring.score(m.test) if m.test else float('nan'),
                   'seconds': m.seconds} for m in sweep.members],
      'compile_seconds': sweep.compile_seconds,
      'train_seconds': sum(m.seconds for m in sweep.members),
  }
  record['status'] = cells.status(record)
  record['model_cfg'] = sweep.model_cfg.to_dict()
  if keep_params:
    record['params_by_seed'] = {m.seed: m.params for m in best}
  return record


def _planned(task: str, family: str, model_cfg: ModelConfig, spec, budget: int,
             batch_size: int, criterion, learning_rates: Sequence[float],
             lr_selection: str, seeds: Sequence[int], chance: float) -> dict[str, Any]:
  """The fields of a cell's record that describe what was planned (model, sizes, budget,
  grid, criterion): the same whether the cell trained or ran out of memory."""
  return {
      'task': task, 'family': family, 'params': param_count(model_cfg),
      'd_model': model_cfg.d_model, 'num_layers': model_cfg.num_layers,
      'seq_len': spec.max_len,
      'flops_per_token': forward_flops_per_token(model_cfg, spec.max_len).total,
      'budget': budget, 'batch_size': batch_size,
      'criterion': criterion.describe() if criterion else 'none (full budget)',
      'learning_rates': list(learning_rates), 'lr_selection': lr_selection,
      'seeds': list(seeds), 'chance': chance}


def _score_or_none(scoring: Scoring, metrics: dict[str, float] | None) -> float | None:
  """The score of one extra test, None when it was not measured (out of memory)."""
  return None if metrics is None else scoring.score(metrics)


def out_of_memory_record(task: str, family: str, config, criterion, scoring: Scoring,
                         chance: float | None, learning_rates: Sequence[float],
                         seeds: Sequence[int], lr_selection: str,
                         extra_tests: dict[str, dict[str, Any]] | None,
                         error: BaseException) -> dict[str, Any]:
  """The record of a cell whose programs did not fit in the device's memory: the keys of
  ``train_cell``'s record, with what was planned (model, budget, grid) and nothing
  measured (no scores, no steps to the criterion, no members); ``status`` is
  ``'out of memory'`` and ``error`` the allocator's first line."""
  spec = tasks.open_task(config).spec  # already prepared by the sweep that failed
  model_cfg = resolved_model(config, spec)
  nan = float('nan')
  return {
      **_planned(task, family, model_cfg, spec, int(config.num_steps),
                 int(config.batch_size), criterion, learning_rates, lr_selection, seeds,
                 chance if chance is not None else scoring.chance(
                     config.task_options.to_dict())),
      'learning_rate': None, 'scores': [], 'test_metrics': [], 'score_mean': nan,
      'score_min': nan, 'score_max': nan, 'test_examples': 0, 'steps_to_criterion': [], 'reached': 0, 'curves': {},
      'extra_scores': {name: [] for name in (extra_tests or {})},
      'extra_status': {name: OUT_OF_MEMORY for name in (extra_tests or {})},
      'members': [], 'compile_seconds': nan, 'train_seconds': 0.0,
      'status': OUT_OF_MEMORY, 'error': str(error).splitlines()[0],
      'model_cfg': model_cfg.to_dict(),
  }
