"""AdamW (Loshchilov & Hutter 2019) with warmup + cosine/constant schedule, global-norm
clipping (Pascanu et al. 2013) and weight decay masked by parameter path.

Decay applies only to weight matrices. Excluded, by the last path component or an
ancestor: biases (``bias``, ``b``, ``b_ih``, ``b_hh``, ``conv_bias``), norm scales
(``scale``), embeddings (``embedding`` — token, target and learned position tables), and
the state-space dynamics (S4D ``log_A_real``/``A_imag``/``log_dt``/``B``/``C``/``D``,
Mamba ``A_log``/``D``), whose values set time scales rather than feature weights. Any
remaining 1-D parameter (e.g. Bahdanau's ``v``) is a vector, not a matrix, and is excluded
too.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

NO_DECAY_NAMES = frozenset({
    'bias', 'b', 'b_ih', 'b_hh', 'conv_bias', 'scale', 'embedding',
    'log_A_real', 'A_imag', 'log_dt', 'B', 'C', 'D', 'A_log'})


def _key_name(key: Any) -> str:
  return str(getattr(key, 'key', getattr(key, 'name', key)))


def decays(path: tuple[Any, ...], leaf: Any) -> bool:
  """Whether the parameter at ``path`` (a pytree key path) gets weight decay."""
  names = [_key_name(k) for k in path]
  if any(n in NO_DECAY_NAMES for n in names):
    return False
  return getattr(leaf, 'ndim', 0) >= 2


def weight_decay_mask(params: Any) -> Any:
  """A pytree of bools shaped like ``params``: True where weight decay applies."""
  return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(config, peak: float | None = None) -> optax.Schedule:
  """Linear warmup over ``warmup_steps`` to ``peak`` (default ``learning_rate``), then
  cosine decay to ``peak * min_lr_ratio`` at ``num_steps`` (Loshchilov & Hutter 2017), or
  constant after warmup."""
  peak = float(config.learning_rate if peak is None else peak)
  warmup = int(config.warmup_steps)
  if config.lr_schedule == 'constant':
    if not warmup:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  decay_steps = max(int(config.num_steps), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=peak * float(config.min_lr_ratio))


def _clipped_adamw(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  parts = []
  if config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(float(config.grad_clip)))
  parts.append(optax.adamw(schedule, b1=float(config.b1), b2=float(config.b2),
                           eps=float(config.eps), weight_decay=float(config.weight_decay),
                           mask=weight_decay_mask))
  return optax.chain(*parts)


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(optimizer, schedule)``: clip by global norm, then AdamW with the masked decay."""
  schedule = make_schedule(config)
  return _clipped_adamw(config, schedule), schedule


def make_tunable_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``make_optimizer`` with the peak learning rate kept in the optimizer state
  (``opt_state.hyperparams['learning_rate']``, via ``optax.inject_hyperparams``) instead of
  baked into the update function, so that one compiled train step serves every member of
  a learning-rate sweep. Returns the optimizer and the *unit* schedule (peak 1.0): the
  rate at step ``s`` is ``learning_rate * unit(s)``."""
  unit = make_schedule(config, peak=1.0)

  def build(learning_rate):
    return _clipped_adamw(config, lambda count: learning_rate * unit(count))

  return optax.inject_hyperparams(build)(learning_rate=float(config.learning_rate)), unit
