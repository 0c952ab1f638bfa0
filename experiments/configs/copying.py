"""Copying memory (Arjovsky et al. 2016): recall a prefix after a long delay."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'copying', num_tokens=10, delay=50)
  c.model_cfg.max_len = 128
  return c
