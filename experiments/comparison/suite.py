"""Settings of the comparison suites: what ``--suite=quick|standard|full`` measure.

``quick`` (target 20 minutes on a 2-core CPU; 18 min 55 s measured on 2026-12-02 at
340c701) is a preview: 2 seeds, one learning rate, short budgets, the standard timing
grids with fewer points between the same ends; its trained verdicts say "preview" wherever
a run did not converge. ``standard`` (target 60 minutes on a 2-core CPU; 55 min 26 s
measured on 2026-12-02 at 175002e, long-range 36 min of it; 1 h 20 min the day before) is
the one to cite: 3 seeds, a 3-point learning-rate grid chosen on validation, training to
criterion, difficulty sweeps. ``full`` runs the papers' lengths with 5 seeds, for
accelerators. ``smoke`` is for the tests. Every experiment reads only its own fields, and keeps per-suite sizes of
its own (``SIZES[suite.name]``, read through ``Suite.sized``) where it needs more.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES as REGISTRY
from seqjax.models.sizing import match_d_model

# The families the article's table is about, plus the SSMs it points to (the default).
FAMILIES = ('lstm', 'transformer', 's4d', 'mamba')
# The recurrent revival (2024): gated recurrences without a hidden-to-hidden matmul in
# their gates (min_gru, min_lstm, hawk, mlstm, mamba2), with one (slstm), and mixes
# (xlstm: mLSTM and sLSTM blocks; griffin: RG-LRU and local attention). Opt in with
# ``--families``; every experiment handles them.
REVIVAL = ('min_gru', 'min_lstm', 'mlstm', 'slstm', 'xlstm', 'hawk', 'griffin', 'mamba2')
# What ``--families`` accepts.
COMPARABLE = FAMILIES + ('gru',) + REVIVAL


def whole_input_classifier(family: str) -> tuple[str, dict[str, Any]]:
  """``(model, overrides)`` of ``family``'s classifier that reads the whole input, as
  the article's bidirectional LSTM does: the BiLSTM for the LSTM, a Transformer encoder
  (no causal mask), and every family that can run both ways in its bidirectional form
  (``seqjax.layers.bidirectional``); a causal-only family (the GRU) reads forward."""
  if family == 'lstm':
    return 'bilstm', {}
  return family, ({'causal': False} if False in REGISTRY[family].causal else {})


@dataclasses.dataclass(frozen=True)
class Suite:
  name: str
  target_params: int            # every family is matched to this many parameters
  num_layers: int
  vocab_size: int
  batch_size: int
  speed_lengths: tuple[int, ...]
  memory_lengths: tuple[int, ...]
  stream_contexts: tuple[int, ...]
  repeats: int                  # timing repeats (median reported)
  max_d_model: int = 4096       # upper bound of the width search
  # Trained experiments: every family gets the same seeds, grid and budget.
  seeds: int = 3                # seeds per cell (--seeds overrides)
  learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # the same grid for everyone
  # 'first_seed': the rate is chosen on the first seed, the other seeds train with it
  # only; 'all_seeds': every seed x every rate, chosen on the mean over seeds.
  lr_selection: str = 'first_seed'
  # Long-range sweeps: choose the rate once per (task, family), at the task's hardest
  # setting, and train every other setting of the task with it (its seeds only).
  tune_once_per_task: bool = False
  preview: bool = False         # verdicts say "preview" where a run did not converge
  workers: int | None = None    # training processes (None: pool.default_workers(); 0: here)
  first_seed: int = 0           # seeds are first_seed, first_seed + 1, ...
  # Caps for trying a suite end to end on small hardware (0 = none): every training
  # budget and every synthetic split size. A capped run is not the suite's result.
  max_steps: int = 0
  max_examples: int = 0
  # Parameter cap (0 = none): every matched parameter target (``target_params``, the
  # scale ladder's ``budgets``) and long-range's fixed widths (``longrange.cap_widths``).
  max_params: int = 0

  @property
  def capped(self) -> bool:
    """Whether a cap shrank this suite: its numbers are not the suite's result."""
    return bool(self.max_steps or self.max_examples or self.max_params)

  @property
  def seed_list(self) -> list[int]:
    return list(range(self.first_seed, self.first_seed + self.seeds))

  def with_seed(self, seed: int) -> 'Suite':
    return dataclasses.replace(self, first_seed=seed)

  def sized(self, table: dict[str, Any]) -> Any:
    """An experiment's sizes for this suite (``table[self.name]``, a dataclass), with the
    suite's caps applied to its step budgets (``steps``, ``*_steps``, ``eval_every``) and
    synthetic split sizes (``num_train``, ``num_validation``, ``num_test``) and parameter targets
    (``target_params``; ``budgets``, a ladder of targets, capped with its duplicates
    dropped, so a ladder keeps its rungs below the cap and ends at it)."""
    sizes = table[self.name]
    caps = {}
    for field in dataclasses.fields(sizes):
      value = getattr(sizes, field.name)
      if self.max_steps and (field.name == 'steps' or field.name.endswith('_steps')):
        caps[field.name] = min(value, self.max_steps)
      elif self.max_steps and field.name == 'eval_every':
        caps[field.name] = min(value, max(self.max_steps // 2, 1))
      elif self.max_examples and field.name in ('num_train', 'num_validation', 'num_test'):
        caps[field.name] = min(value, self.max_examples)
      elif self.max_params and field.name == 'target_params':
        caps[field.name] = min(value, self.max_params)
      elif self.max_params and field.name == 'budgets':
        caps[field.name] = tuple(dict.fromkeys(min(v, self.max_params) for v in value))
    return dataclasses.replace(sizes, **caps)


SUITES = {
    'quick': Suite(name='quick', target_params=200_000, num_layers=2, vocab_size=256,
                   batch_size=4, speed_lengths=(128, 2048),
                   # The standard suite's ranges with fewer points between the ends: the
                   # growth ratios span the same 16x (speed, memory) and 64x (streaming).
                   memory_lengths=(256, 1024, 4096),
                   stream_contexts=(128, 1024, 8192), repeats=3, seeds=2,
                   learning_rates=(3e-3,), preview=True),
    'standard': Suite(name='standard', target_params=200_000, num_layers=2,
                      vocab_size=256, batch_size=4,
                      speed_lengths=(128, 512, 2048),
                      memory_lengths=(256, 512, 1024, 2048, 4096),
                      stream_contexts=(128, 512, 2048, 8192), repeats=3, seeds=3,
                      tune_once_per_task=True),
    # Minutes-free sizes for the test suite and for trying the pipeline end to end.
    # Two memory lengths, either side of the chunked kernel's 128-token chunk: the
    # growth from the shortest to the longest is what the tests compare.
    'smoke': Suite(name='smoke', target_params=20_000, num_layers=1, vocab_size=32,
                   batch_size=2, speed_lengths=(16, 64), memory_lengths=(16, 256),
                   stream_contexts=(16, 128), repeats=1, max_d_model=256, seeds=2,
                   learning_rates=(1e-3, 1e-2), preview=True, workers=0,
                   tune_once_per_task=True),
    'full': Suite(name='full', target_params=5_000_000, num_layers=4, vocab_size=256,
                  batch_size=8, speed_lengths=(128, 256, 512, 1024, 2048, 4096),
                  memory_lengths=(128, 256, 512, 1024, 2048, 4096, 8192, 16384),
                  stream_contexts=(128, 512, 2048, 8192, 32768), repeats=9,
                  max_d_model=8192, seeds=5, lr_selection='all_seeds'),
}


@functools.lru_cache(maxsize=None)
def _matched(base: ModelConfig, target_params: int, max_d_model: int) -> ModelConfig:
  return match_d_model(base, target_params, max_d_model=max_d_model)


def model_config(suite: Suite, family: str, max_len: int, head: str = 'lm',
                 **overrides) -> ModelConfig:
  """A ``family`` model matched to the suite's parameter budget.

  The width is matched once per (family, head, overrides) at a fixed ``max_len`` (only
  learned positions depend on it, and they are matched with their table), then reused at
  every length.
  """
  base = ModelConfig(model=family, head=head, vocab_size=suite.vocab_size,
                     num_layers=suite.num_layers, max_len=512, **overrides)
  return _matched(base, suite.target_params, suite.max_d_model).replace(max_len=max_len)
