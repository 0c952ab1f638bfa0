"""ListOps (Nangia & Bowman 2018; LRA): 10-way classification of nested expressions."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.task = 'listops'
  c.task_options.update({'max_len': 128})
  c.model_cfg.max_len = 128
  c.model_cfg.causal = False
  return c
