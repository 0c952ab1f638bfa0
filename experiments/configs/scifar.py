"""Sequential CIFAR-10 as LRA Image: 1,024 grey pixels (Krizhevsky 2009; Tay et al. 2021); --config.task_options.grayscale=False gives S4's RGB sCIFAR.

Model and optimisation as S4's LRA run (experiments/configs/lra_settings.py cites them);
any family: --config.model=transformer|lstm|mamba|...; a CPU-sized run of every LRA task
is `python -m experiments.lra --scale=cpu`.
"""

from experiments.configs import base, lra_settings


def get_config():
  return lra_settings.apply(base.get_config(), 'image')
