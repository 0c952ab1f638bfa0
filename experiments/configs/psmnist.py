"""Permuted sequential MNIST (Le, Jaitly & Hinton 2015): smnist.py's settings with one
fixed, seeded permutation of the 784 pixels (``task_options.permutation_seed``)."""

from experiments.configs import base, smnist


def get_config():
  c = smnist.get_config()
  base.set_task(c, 'psmnist')
  return c
