"""Associative recall (Ba et al. 2016): the value paired with the queried key."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'associative_recall', num_pairs=8)
  c.model_cfg.max_len = 64
  return c
