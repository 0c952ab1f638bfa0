"""Parameter counts, and widths that match families by size.

A fair comparison puts families at (nearly) equal parameter counts. ``match_d_model``
searches the residual width that brings a config closest to a target count; counting uses
``jax.eval_shape`` so nothing is allocated.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

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

  Parameter count grows monotonically with ``d_model`` for every family, so the closest
  width is next to the first multiple of ``width_multiple(cfg)`` that reaches the target
  (:func:`first_reaching`); the width is capped at ``max_d_model``.
  """
  step = width_multiple(cfg)
  count = lambda k: param_count(cfg.replace(d_model=k * step))
  first = first_reaching(count, target_params, max(max_d_model // step, 1))
  candidates = [k for k in (first - 1, first) if k >= 1]
  best = min(candidates, key=lambda k: abs(count(k) - target_params))
  return cfg.replace(d_model=best * step)


def first_reaching(count: Callable[[int], int], target: int, top: int) -> int:
  """The smallest ``k`` in ``[1, top]`` with ``count(k) >= target`` (``top`` when none
  does), for ``count`` non-decreasing in ``k``.

  Each ``count`` traces a model (0.2-0.7 s), so the search starts where a quadratic
  through ``count(1..3)`` puts the target (a parameter count is ~quadratic in the width:
  ``d x d`` matrices, ``d``-wide embeddings and biases), brackets the answer by doubling
  steps away from that guess and bisects the bracket: ~5 counts for the suites' models
  where a bisection over ``[1, top]`` took ~10. Exactly the bisection's answer, the guess
  only decides where to look."""
  guess = _quadratic_guess([count(k) for k in range(1, min(top, 3) + 1)], target, top)
  if count(guess) >= target:  # walk down until below the target (or past k = 1)
    above, gap = guess, 1
    while above - gap >= 1 and count(above - gap) >= target:
      above, gap = above - gap, 2 * gap
    below = max(above - gap, 0)
  else:  # walk up until the target is reached (or top)
    below, gap = guess, 1
    while below + gap < top and count(below + gap) < target:
      below, gap = below + gap, 2 * gap
    above = min(below + gap, top)
  # Invariant: count(below) < target (or below == 0) and the answer is in (below, above].
  while above - below > 1:
    mid = (below + above) // 2
    if count(mid) >= target:
      above = mid
    else:
      below = mid
  return above


def _quadratic_guess(counts: list[int], target: int, top: int) -> int:
  """Where ``a k^2 + b k + c`` through ``counts`` (at k = 1, 2, ...) reaches ``target``,
  rounded up and clipped to ``[1, top]``."""
  if len(counts) < 3:
    return len(counts)
  f1, f2, f3 = counts
  a = ((f3 - f2) - (f2 - f1)) / 2
  b = (f2 - f1) - 3 * a
  c = f1 - a - b
  if a > 0:
    k = (-b + math.sqrt(max(b * b - 4 * a * (c - target), 0.0))) / (2 * a)
  else:
    k = (target - c) / b if b > 0 else 1.0
  return int(min(max(math.ceil(k), 1), top))
