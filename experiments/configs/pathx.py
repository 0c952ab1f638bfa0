"""Path-X: Pathfinder at 128x128, 16,384 pixels (LRA; first solved by S4).

Model and optimisation as S4's LRA run (experiments/configs/lra_settings.py cites them);
any family: --config.model=transformer|lstm|mamba|...; a CPU-sized run of every LRA task
is `python -m experiments.lra --scale=cpu`.
"""

from experiments.configs import base, lra_settings


def get_config():
  return lra_settings.apply(base.get_config(), 'pathx')
