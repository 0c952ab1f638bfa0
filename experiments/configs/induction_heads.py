"""Induction heads (Olsson et al. 2022): complete a repeated bigram."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'induction_heads', seq_len=32)
  c.model_cfg.max_len = 64
  return c
