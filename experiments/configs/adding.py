"""Adding problem (Hochreiter & Schmidhuber 1997): regression on continuous inputs."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'adding', seq_len=50)
  c.model = 'lstm'
  c.model_cfg.max_len = 64
  return c
