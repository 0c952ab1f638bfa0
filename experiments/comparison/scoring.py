"""How each trained task is scored: one larger-is-better number, a chance level, and the
criterion a run trains to.

Accuracy tasks are scored by their accuracy; the adding problem (a regression) by the
fraction of the baseline's error removed, ``1 - MSE / MSE(predict the mean)``, where the
target is the sum of two U[0, 1) values, so always predicting its mean has MSE 2/12 = 1/6
(Le et al. 2015). Every task trains until its validation score reaches ``SOLVED`` (0.99:
99 % accuracy, or 99 % of the baseline's error removed) or its step budget runs out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from seqjax.training.sweep import Criterion

SOLVED = 0.99
ADDING_BASELINE_MSE = 1 / 6
# A score within this of the chance level counts as "learned nothing", where no binomial
# margin applies (the adding problem's score is not an accuracy).
CHANCE_MARGIN = 0.05


@dataclasses.dataclass(frozen=True)
class Scoring:
  """``metric``: the task's metric (``seqjax.training.losses``); ``chance``: the score of a
  model that ignores its input, from the task's options."""

  metric: str
  chance: Callable[[dict[str, Any]], float]
  regression_baseline: float | None = None  # MSE of predicting the mean, for regressions

  def score(self, metrics: dict[str, float]) -> float:
    value = metrics.get(self.metric, float('nan'))
    if self.regression_baseline is None:
      return float(value)
    return 1.0 - float(value) / self.regression_baseline

  def criterion(self, solved: float = SOLVED) -> Criterion:
    """``score >= solved`` expressed on the task's own metric."""
    if self.regression_baseline is None:
      return Criterion(self.metric, solved, larger_is_better=True)
    return Criterion(self.metric, (1.0 - solved) * self.regression_baseline,
                     larger_is_better=False)


def _one_in(option: str, default: int) -> Callable[[dict[str, Any]], float]:
  return lambda options: 1.0 / options.get(option, default)


SCORING = {
    'copying': Scoring('token_accuracy', _one_in('num_symbols', 8)),
    'selective_copying': Scoring('token_accuracy', _one_in('num_symbols', 8)),
    'mqar': Scoring('token_accuracy', _one_in('num_values', 32)),
    'associative_recall': Scoring('token_accuracy', _one_in('num_values', 16)),
    'induction_heads': Scoring('token_accuracy', _one_in('num_symbols', 16)),
    'adding': Scoring('mse', lambda options: 0.0, regression_baseline=ADDING_BASELINE_MSE),
    'marker_order': Scoring('accuracy', _one_in('num_markers', 2)),
}


def scoring_for(task: str) -> Scoring:
  if task in SCORING:
    return SCORING[task]
  return Scoring('accuracy', lambda options: 0.5)  # real-text classification (binary)
