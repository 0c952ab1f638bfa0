"""Selective copying (Gu & Dao 2023, sec. 3.1): emit the scattered data tokens in order."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'selective_copying', seq_len=64, num_tokens=8, num_symbols=8,
               num_train=20000)
  c.model_cfg.max_len = 128
  c.num_steps = 1600
  c.eval_every = 400
  c.checkpoint_every = 400
  return c
