"""Permuted sequential MNIST (Le, Jaitly & Hinton 2015): smnist.py's settings with one
fixed, seeded permutation of the 784 pixels (``task_options.permutation_seed``)."""

from experiments.configs import smnist


def get_config():
  c = smnist.get_config()
  c.task = 'psmnist'
  c.task_options.permutation_seed = 0
  return c
