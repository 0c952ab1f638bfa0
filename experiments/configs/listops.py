"""ListOps (Nangia & Bowman 2018) at LRA's lengths, 500-2,000 tokens.

Model and optimisation as S4's LRA run (experiments/configs/lra_settings.py cites them);
any family: --config.model=transformer|lstm|mamba|...; a CPU-sized run of every LRA task
is `python -m experiments.lra --scale=cpu`.
"""

from experiments.configs import base, lra_settings


def get_config():
  return lra_settings.apply(base.get_config(), 'listops')
