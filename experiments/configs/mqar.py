"""Multi-query associative recall (Arora et al. 2023, Zoology)."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'mqar', seq_len=64, num_pairs=8)
  c.model_cfg.max_len = 128
  return c
