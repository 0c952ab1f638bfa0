"""Settings of the comparison suites: what ``--suite=quick`` and ``--suite=full`` measure.

``quick`` is sized to finish within 20 minutes on a 2-core CPU; ``full`` is for
accelerators and long runs. Every experiment reads only its own fields.
"""

from __future__ import annotations

import dataclasses
import functools

from seqjax.models.config import ModelConfig
from seqjax.models.sizing import match_d_model

# The families the article's table is about, plus the SSMs it points to.
FAMILIES = ('lstm', 'transformer', 's4d', 'mamba')


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
  # Trained experiments: every family gets the same budget.
  train_target_params: int = 100_000
  train_steps: int = 300
  train_examples: int = 4000
  longrange_lengths: int = 1    # how many distances per task (from the short end)
  longrange_tasks: tuple[str, ...] = ('copying', 'selective_copying', 'mqar',
                                      'induction_heads', 'adding')


SUITES = {
    'quick': Suite(name='quick', target_params=200_000, num_layers=2, vocab_size=256,
                   batch_size=4, speed_lengths=(128, 256, 512, 1024, 2048),
                   memory_lengths=(256, 512, 1024, 2048, 4096),
                   stream_contexts=(128, 512, 2048, 8192), repeats=3),
    # Minutes-free sizes for the test suite and for trying the pipeline end to end.
    'smoke': Suite(name='smoke', target_params=20_000, num_layers=1, vocab_size=32,
                   batch_size=2, speed_lengths=(16, 64), memory_lengths=(16, 64, 256),
                   stream_contexts=(16, 128), repeats=1, max_d_model=256,
                   train_target_params=20_000, train_steps=4, train_examples=64,
                   longrange_tasks=('selective_copying', 'adding')),
    'full': Suite(name='full', target_params=5_000_000, num_layers=4, vocab_size=256,
                  batch_size=8, speed_lengths=(128, 256, 512, 1024, 2048, 4096),
                  memory_lengths=(128, 256, 512, 1024, 2048, 4096, 8192, 16384),
                  stream_contexts=(128, 512, 2048, 8192, 32768), repeats=9,
                  max_d_model=8192, train_target_params=1_000_000, train_steps=5000,
                  train_examples=50_000, longrange_lengths=3),
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
