"""Toy translation (date normalisation) with the Bahdanau encoder-decoder."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'toy_translation')
  c.model = 'lstm_attention'
  c.model_cfg.max_len = 64
  c.learning_rate = 3e-3
  return c
