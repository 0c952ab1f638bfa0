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


def make_schedule(config) -> optax.Schedule:
  """Linear warmup over ``warmup_steps`` to ``learning_rate``, then cosine decay to
  ``learning_rate * min_lr_ratio`` at ``num_steps`` (Loshchilov & Hutter 2017), or
  constant after warmup."""
  peak, warmup = float(config.learning_rate), int(config.warmup_steps)
  if config.lr_schedule == 'constant':
    if not warmup:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  decay_steps = max(int(config.num_steps), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=peak * float(config.min_lr_ratio))


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(optimizer, schedule)``: clip by global norm, then AdamW with the masked decay."""
  schedule = make_schedule(config)
  parts = []
  if config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(float(config.grad_clip)))
  parts.append(optax.adamw(schedule, b1=float(config.b1), b2=float(config.b2),
                           eps=float(config.eps), weight_decay=float(config.weight_decay),
                           mask=weight_decay_mask))
  return optax.chain(*parts), schedule
