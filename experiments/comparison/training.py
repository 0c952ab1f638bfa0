"""Trains one (task, family) pair with the project's trainer for the comparison report.

Every family gets the same budget (steps, batch, learning-rate schedule) and a width
matched to the same parameter count, so differences come from the architecture.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from typing import Any

import ml_collections

from seqjax.data.registry import get_task
from seqjax.models.config import ModelConfig
from seqjax.models.sizing import match_d_model, param_count
from seqjax.training import loop


@functools.lru_cache(maxsize=None)
def matched_d_model(family: str, fields: tuple, target_params: int, max_d_model: int) -> int:
  base = ModelConfig(model=family, **dict(fields))
  return match_d_model(base, target_params, max_d_model=max_d_model).d_model


def train_run(task: str, family: str, *, workdir: str, target_params: int, steps: int,
              seed: int, task_options: dict[str, Any] | None = None,
              model_overrides: dict[str, Any] | None = None, batch_size: int = 32,
              learning_rate: float = 3e-3, max_d_model: int = 4096,
              num_train: int = 4000, config_name: str | None = None,
              keep_checkpoints: bool = False) -> dict[str, Any]:
  """Trains ``family`` on ``task`` and returns the test metrics plus the run's settings.

  The settings start from ``experiments/configs/<config_name or task>.py`` (``base`` suits
  tasks without a file of their own, such as ``csv``). The workdir's checkpoints are
  removed afterwards unless ``keep_checkpoints`` (the report usually keeps only numbers;
  ``seqjax.training.loop.load_for_inference(workdir)`` reloads a kept run); pass a fresh
  ``workdir`` per run. An option set to ``None`` in ``task_options`` is removed (the split
  sizes, for tasks whose splits are fixed)."""
  config = importlib.import_module(
      f'experiments.configs.{config_name or task}').get_config()
  config.task = task
  options = {**config.task_options.to_dict(), 'num_train': num_train,
             'num_validation': 256, 'num_test': 512, **(task_options or {})}
  # None removes an option, e.g. the split sizes of a task whose splits are fixed.
  config.task_options = ml_collections.ConfigDict(
      {k: v for k, v in options.items() if v is not None})
  spec = get_task(config.task, data_dir=config.data_dir or None, seed=seed,
                  **config.task_options.to_dict()).spec
  overrides = dict(model_overrides or {})
  fields = {**config.model_cfg.to_dict(), **overrides, **spec.model_fields(),
            'max_len': max(spec.max_len, spec.max_target_len, 8)}
  fields.pop('d_model')
  d_model = matched_d_model(family, tuple(sorted(fields.items())), target_params,
                            max_d_model)
  config.model = family
  for key, value in {**overrides, 'd_model': d_model, 'max_len': fields['max_len']}.items():
    config.model_cfg[key] = value
  config.update(seed=seed, num_steps=steps, batch_size=batch_size,
                learning_rate=learning_rate, warmup_steps=max(steps // 10, 1),
                eval_every=0, log_every=max(steps // 4, 1), checkpoint_every=steps,
                async_checkpoint=False, tensorboard=False)
  result = loop.train(config, workdir)
  model_cfg = ModelConfig.from_mapping({**config.model_cfg.to_dict(), 'model': family,
                                        **spec.model_fields()})
  if not keep_checkpoints:
    shutil.rmtree(os.path.join(workdir, loop.CHECKPOINT_DIR), ignore_errors=True)
  return {'task': task, 'family': family, 'd_model': d_model,
          'params': param_count(model_cfg), 'steps': steps, 'seq_len': spec.max_len,
          'metric': spec.eval_metric, 'larger_is_better': spec.eval_metric_larger_is_better,
          'value': float(result['test'][spec.eval_metric]), **{
              f'test_{k}': float(v) for k, v in result['test'].items()
              if isinstance(v, (int, float))}}
