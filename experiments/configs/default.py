"""Default run: selective copying (Gu & Dao 2023) with a small Transformer; learns to
~99.5 % validation token accuracy in about 2 minutes on a 2-core CPU."""

from experiments.configs import selective_copying


def get_config():
  return selective_copying.get_config()
