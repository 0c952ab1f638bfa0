"""Marker order: which of the markers comes first (order is the only signal)."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'marker_order', seq_len=16, num_markers=2, num_symbols=8)
  c.model_cfg.max_len = 16
  # A bidirectional encoder: without positions it sees only the bag of tokens.
  c.model_cfg.causal = False
  return c
