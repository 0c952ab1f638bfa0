"""Experiment config checks and the model config a task + experiment config resolve to.

Everything a user can get wrong in a config fails here, before any data is generated or
anything compiles, with one line naming the field (``UserError``).
"""

from __future__ import annotations

import json
from typing import Any

from seqjax.data.spec import TaskSpec
from seqjax.models.config import ModelConfig, Role, field_names, upgrade
from seqjax.models.families import MODEL_NAMES
from seqjax.training.errors import ConfigMismatchError, UserError

# ModelConfig fields that change how a model computes but not its parameters.
NON_SHAPE_FIELDS = frozenset(field_names(Role.IMPLEMENTATION))
SCHEDULES = ('cosine', 'constant')


def _need(cond: bool, msg: str) -> None:
  if not cond:
    raise UserError(msg)


def check_config(config) -> None:
  """One-line ``UserError`` for the first impossible value in an experiment config."""
  _need(config.model in MODEL_NAMES,
        f'config.model={config.model!r} is not a model; choose one of {list(MODEL_NAMES)}')
  for name in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every',
               'keep_checkpoints', 'grad_accum_steps'):
    value = config[name]
    _need(isinstance(value, int) and value >= 1,
          f'config.{name}={value!r} must be a positive integer')
  for name in ('warmup_steps', 'eval_every', 'eval_steps', 'eval_batch_size',
               'num_devices'):
    value = config[name]
    _need(isinstance(value, int) and value >= 0,
          f'config.{name}={value!r} must be a non-negative integer')
  _need(config.learning_rate > 0,
        f'config.learning_rate={config.learning_rate} must be positive')
  for name in ('weight_decay', 'grad_clip', 'eps'):
    _need(config[name] >= 0, f'config.{name}={config[name]} must be non-negative')
  for name in ('b1', 'b2', 'min_lr_ratio'):
    _need(0 <= config[name] <= 1, f'config.{name}={config[name]} must be in [0, 1]')
  _need(config.lr_schedule in SCHEDULES,
        f'config.lr_schedule={config.lr_schedule!r} is not valid; choose one of '
        f'{list(SCHEDULES)}')
  _need(isinstance(config.get('restart', False), bool),
        f'config.restart={config.get("restart")!r} must be True or False')
  _need(config.batch_size % config.grad_accum_steps == 0,
        f'config.batch_size={config.batch_size} must be divisible by '
        f'config.grad_accum_steps={config.grad_accum_steps}')


def check_device_count(config, available: int) -> None:
  """``config.num_devices`` must not ask for more devices than this job has."""
  _need(config.num_devices <= available,
        f'config.num_devices={config.num_devices} but this job sees {available} '
        f'device(s); set --config.num_devices to at most {available} (0 = all)')


def check_devices(config, num_devices: int, num_processes: int) -> None:
  for name in ('batch_size', 'eval_batch_size'):
    value = config[name] or config.batch_size
    _need(value % num_devices == 0 and value % num_processes == 0,
          f'config.{name}={value} must be divisible by the {num_devices} devices '
          f'({num_processes} processes) of the mesh')
  _need(config.batch_size // config.grad_accum_steps % num_devices == 0,
        f'config.batch_size / config.grad_accum_steps = '
        f'{config.batch_size // config.grad_accum_steps} must be divisible by the '
        f'{num_devices} devices')


def model_config(config, spec: TaskSpec) -> ModelConfig:
  """``ModelConfig`` from ``config.model``, ``config.model_cfg`` and the task's fields."""
  fields = {**config.model_cfg.to_dict(), 'model': config.model, **spec.model_fields()}
  try:
    cfg = ModelConfig.from_mapping(fields)
  except ValueError as err:
    raise UserError(f'config.model_cfg: {err}') from None
  _need(spec.max_len <= cfg.max_len,
        f'config.model_cfg.max_len={cfg.max_len} is shorter than the task\'s sequences '
        f'(max_len={spec.max_len}); raise --config.model_cfg.max_len')
  _need(spec.max_target_len <= cfg.max_len,
        f'config.model_cfg.max_len={cfg.max_len} is shorter than the task\'s targets '
        f'(max_target_len={spec.max_target_len}); raise --config.model_cfg.max_len')
  return cfg


def shape_differences(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
  """``['d_model: saved 64, requested 128', ...]`` over the shape-defining fields. A field
  newer than the saved run (absent from it) counts as its default, which that run had."""
  defaults = ModelConfig().to_dict()
  out = []
  for key in sorted(set(saved) | set(requested)):
    if key in NON_SHAPE_FIELDS:
      continue
    a, b = saved.get(key, defaults.get(key)), requested.get(key, defaults.get(key))
    if a != b:
      out.append(f'{key}: saved {a!r}, requested {b!r}')
  return out


def check_same_shape(saved_model_cfg: dict[str, Any], cfg: ModelConfig, workdir: str) -> None:
  # A config saved by an older version is compared in today's field names.
  diffs = shape_differences(upgrade(saved_model_cfg), cfg.to_dict())
  if diffs:
    raise ConfigMismatchError(
        f'workdir {workdir} holds a run of a different model ({"; ".join(diffs)}); use a '
        'new --workdir or the saved settings')


def config_to_dict(config) -> dict[str, Any]:
  return json.loads(config.to_json())
