"""The learning-rate walk of the long-range sweeps: one rate per (task, family), chosen
where the choice means something.

A sweep's cells (``(job for train_cell, labels)``, labels holding ``axis``,
``difficulty`` and ``width``) would each cost the whole grid if tuned alone. The rate is
chosen once per (task, family) instead, at the hardest setting where some rate of the
grid learned something, and reused at the task's other settings.
"""

from __future__ import annotations

from typing import Any

from absl import logging

from experiments.comparison import cells, pool
from experiments.comparison.scoring import SOLVED
from experiments.comparison.suite import Suite


def setting(labels: dict[str, Any]) -> str:
  """A cell's setting as the report writes it, e.g. ``num_pairs=8, d_model=64``."""
  text = f'{labels["axis"]}={labels["difficulty"]}'
  return text + (f', d_model={labels["width"]}' if labels['width'] else '')


def settings(diff) -> list[tuple[int, int | None]]:
  """The ``(difficulty, width)`` settings where a task's rate may be chosen, in the order
  tried: hardest first, at the largest width (MQAR). ``diff``: a ``longrange.Difficulty``
  (its ``values``, easy to hard, and its ``widths``)."""
  width = max(diff.widths) if diff.widths else None
  return [(value, width) for value in reversed(diff.values)]


def learned_something(record: dict[str, Any]) -> bool:
  """Whether the tuning seed's best rate got at least halfway from chance to the
  criterion on validation: a rate choice made where no rate did is made on noise. A cell
  out of memory learned nothing (the walk moves on to an easier setting)."""
  if cells.out_of_memory(record):
    return False
  first = record['seeds'][0]
  best = max(m['validation_score'] for m in record['members'] if m['seed'] == first)
  return best >= record['chance'] + 0.5 * (SOLVED - record['chance'])


def train(planned: list[tuple[dict, dict]], tasks: dict[str, Any], suite: Suite
          ) -> list[dict[str, Any]]:
  """The records of ``planned`` cells, in order.

  With ``suite.tune_once_per_task`` the rate is chosen once per (task, family): at the
  task's hardest setting where the first seed's best rate learned something
  (``learned_something``), walking to easier settings while none did, and at the
  easiest if none ever does. Each setting on the walk trains the whole grid on the first
  seed (the cell's other seeds with its own choice); as soon as the walk stops, the
  pair's other cells start with the chosen rate (their seeds only), and cells on the walk
  that chose another rate train again with it. (A rate chosen where every rate fails
  flipped between two runs that differed only in rounding: the LSTM's copying rate at
  delay 20, 1e-2 in one run and 3e-3 in the next.)"""
  if not suite.tune_once_per_task:
    return pool.run_cells([job for job, _ in planned], suite.workers)

  def pair(i):
    return planned[i][0]['task'], planned[i][0]['family']

  walks: dict[tuple[str, str], list[int]] = {}  # planned indices, in walking order
  for task, diff in tasks.items():
    for value_width in settings(diff):
      for i, (job, labels) in enumerate(planned):
        if job['task'] == task and (labels['difficulty'], labels['width']) == value_width:
          walks.setdefault(pair(i), []).append(i)
  order = [walk[0] for walk in walks.values()]  # planned index of every job run
  tried: dict[tuple[str, str], list[tuple[int, dict]]] = {}
  chosen: dict[tuple[str, str], tuple[float, int]] = {}

  def then(index: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    i = order[index]
    key = pair(i)
    if key in chosen:  # a cell trained with the chosen rate
      return []
    tried.setdefault(key, []).append((i, record))
    walk = walks[key]
    if not learned_something(record) and walk.index(i) + 1 < len(walk):
      easier = walk[walk.index(i) + 1]
      order.append(easier)
      return [planned[easier][0]]
    rate = record['learning_rate']  # None: out of memory at every setting tried
    chosen[key] = (rate, i)
    done = {j for j, _ in tried[key]}
    rest = [j for j in range(len(planned)) if pair(j) == key and j not in done]
    # A cell out of memory would not fit with another rate either: not trained again.
    rest += [j for j, r in tried[key]
             if r['learning_rate'] != rate and not cells.out_of_memory(r)]
    order.extend(rest)
    if rate is None:
      logging.warning('%s/%s: no rate chosen (%s at every setting tried); its other '
                      'cells train the whole grid', *key, cells.NOT_MEASURED)
    return [dict(planned[j][0], learning_rates=(rate,) if rate is not None else
                 planned[j][0]['learning_rates']) for j in rest]

  results = pool.run_cells([planned[i][0] for i in order], suite.workers, then)
  records = {}
  for i, record in zip(order, results):
    records[i] = record  # a cell trained again with the chosen rate replaces its first
  for record in records.values():
    key = record['task'], record['family']
    record['lr_tuned_at'] = (setting(planned[chosen[key][1]][1]) if chosen[key][0]
                             is not None else cells.NOT_MEASURED)
    record['lr_walk'] = [  # every choice made on the way, with the first seed's scores
        {'setting': setting(planned[j][1]), 'learning_rate': r['learning_rate'],
         'learned_something': learned_something(r),
         'validation_scores': {m['learning_rate']: m['validation_score']
                               for m in r['members'] if m['seed'] == r['seeds'][0]}}
        for j, r in tried[key]]
    record['learning_rates'] = list(suite.learning_rates)  # the grid it was chosen from
  return [records[i] for i in range(len(planned))]
