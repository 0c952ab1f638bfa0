"""FLOPs counted from the jaxpr: against XLA's own count where XLA can count (no loops),
against hand-counted matmuls where it cannot (a scan body runs once per step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models.config import ModelConfig
from seqjax.models.flops import count_flops, forward_flops_per_token
from seqjax.models.registry import build_model


def test_matmul_and_scan_counts_match_hand_counts():
  x, w = jnp.ones((3, 5, 7)), jnp.ones((7, 11))
  got = count_flops(lambda x, w: x @ w, x, w)
  assert got.matmul == 2 * 3 * 5 * 7 * 11 and got.elementwise == 0

  def recurrence(h, w):
    def body(h, _):
      return jnp.tanh(h @ w), None
    return jax.lax.scan(body, h, None, length=13)[0]

  h, w = jnp.ones((2, 4)), jnp.ones((4, 4))
  got = count_flops(recurrence, h, w)
  assert got.matmul == 13 * 2 * 2 * 4 * 4     # the body counts once per step
  assert got.elementwise == 13 * 2 * 4        # tanh per step
  assert got.uncounted_while_loops == 0


def test_loop_free_transformer_matches_xla_cost_analysis():
  cfg = ModelConfig(model='transformer', head='lm', vocab_size=32, d_model=16,
                    num_layers=2, num_heads=2, max_len=64, impl='attention:exact')
  model = build_model(cfg)
  tokens = jnp.ones((1, 48), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tokens)['params']
  fn = lambda p: model.apply({'params': p}, tokens)
  xla = jax.jit(fn).lower(params).compile().cost_analysis()['flops']
  ours = count_flops(fn, params).total
  assert ours == pytest.approx(xla, rel=0.03)
  assert forward_flops_per_token(cfg, 48).total == pytest.approx(ours / 48)


def _lstm_matmul_flops_per_token(cfg: ModelConfig) -> float:
  """Hand count for the residual LSTM LM: per layer the LSTM's input and recurrent
  matmuls (4 gates) and the MLP's two matmuls; then the output projection."""
  d, hidden = cfg.d_model, cfg.mlp_hidden
  per_layer = 2 * (d * 4 * d + d * 4 * d) + 2 * (d * hidden + hidden * d)
  return cfg.num_layers * per_layer + 2 * d * cfg.vocab_size


@pytest.mark.parametrize('length', [8, 32])
def test_recurrent_cost_per_token_is_flat_and_hand_counted(length):
  cfg = ModelConfig(model='lstm', head='lm', vocab_size=32, d_model=16, num_layers=2,
                    max_len=64)
  got = forward_flops_per_token(cfg, length)
  assert got.matmul == pytest.approx(_lstm_matmul_flops_per_token(cfg), rel=1e-6)


def test_attention_cost_per_token_grows_with_length_and_recurrences_do_not():
  def per_token(model, length):
    cfg = ModelConfig(model=model, head='lm', vocab_size=32, d_model=16, num_layers=1,
                      num_heads=2, max_len=512)
    return forward_flops_per_token(cfg, length).total

  for model in ('lstm', 's4d', 'mamba'):
    assert per_token(model, 256) == pytest.approx(per_token(model, 64), rel=0.1)
  grow = per_token('transformer', 256) / per_token('transformer', 64)
  assert grow > 1.3
  assert np.isfinite(grow)
