"""IMDB sentiment from bytes: LRA Text (Maas et al. 2011; Tay et al. 2021), 4,096 bytes.

Model and optimisation as S4's LRA run (experiments/configs/lra_settings.py cites them);
any family: --config.model=transformer|lstm|mamba|...; a CPU-sized run of every LRA task
is `python -m experiments.lra --scale=cpu`.
"""

from experiments.configs import base, lra_settings


def get_config():
  return lra_settings.apply(base.get_config(), 'text')
