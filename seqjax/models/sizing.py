"""Parameter counts, and widths that match families by size.

A fair comparison puts families at (nearly) equal parameter counts. ``match_d_model``
searches the residual width that brings a config closest to a target count; counting uses
``jax.eval_shape`` so nothing is allocated.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, example_inputs


def count_params(params: Any) -> int:
  """Number of scalar parameters in a pytree (complex values count once)."""
  return int(sum(x.size for x in jax.tree.leaves(params)))


@functools.lru_cache(maxsize=4096)
def param_count(cfg: ModelConfig) -> int:
  """Parameters of the model ``cfg`` builds, without materialising them. Cached: a
  width search traces the model's init for every width it tries (~0.2 s each)."""
  shapes = jax.eval_shape(lambda: build_model(cfg).init(jax.random.key(0),
                                                        *example_inputs(cfg, 1, 4)))
  return count_params(shapes['params'])


def width_multiple(cfg: ModelConfig) -> int:
  """The step ``d_model`` must move in for ``cfg`` to stay valid (heads, halves)."""
  return cfg.family.width_step(cfg)


def match_d_model(cfg: ModelConfig, target_params: int, max_d_model: int = 8192
                  ) -> ModelConfig:
  """``cfg`` with the ``d_model`` whose parameter count is closest to ``target_params``.

  Parameter count grows monotonically with ``d_model`` for every family, so a bisection
  over multiples of ``width_multiple(cfg)`` finds the closest width.
  """
  step = width_multiple(cfg)
  lo, hi = 1, max_d_model // step
  count = lambda k: param_count(cfg.replace(d_model=k * step))
  while lo < hi:
    mid = (lo + hi) // 2
    if count(mid) < target_params:
      lo = mid + 1
    else:
      hi = mid
  candidates = [k for k in (lo - 1, lo) if k >= 1]
  best = min(candidates, key=lambda k: abs(count(k) - target_params))
  return cfg.replace(d_model=best * step)
