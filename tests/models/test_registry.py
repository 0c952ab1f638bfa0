"""Building models by name, config validation, parameter counting and size matching."""

from __future__ import annotations

import jax
import pytest

from seqjax.models.config import HEADS, MODEL_NAMES, ModelConfig
from seqjax.models.registry import build_model, init_params
from seqjax.models.sizing import count_params, match_d_model, param_count, width_multiple


def test_unknown_names_list_the_valid_choices():
  with pytest.raises(ValueError, match=r"model='lstmm'.*'lstm', 'bilstm', 'gru'"):
    ModelConfig(model='lstmm')
  with pytest.raises(ValueError, match=r"head='decoder'.*'classifier', 'lm', 'seq2seq'"):
    ModelConfig(head='decoder')
  with pytest.raises(ValueError, match='unknown model config field'):
    build_model({'model': 'lstm', 'hiden': 3})


@pytest.mark.parametrize('kwargs,culprit', [
    (dict(model='bilstm', head='lm'), 'not causal'),
    (dict(model='transformer', d_model=30, num_heads=4), 'num_heads'),
    (dict(model='lstm', head='seq2seq', tgt_vocab_size=5), 'lstm_attention'),
    (dict(model='lstm_attention', head='lm'), 'seq2seq'),
    (dict(d_model=0), 'd_model'),
    (dict(dropout=1.5), 'dropout'),
    (dict(model='s4d', s4d_state_size=7), 's4d_state_size'),
    (dict(model='mamba', backbone='stacked'), 'stacked'),
])
def test_impossible_configs_fail_naming_the_field(kwargs, culprit):
  with pytest.raises(ValueError, match=culprit):
    ModelConfig(**kwargs)


def _every_buildable_config():
  for name in MODEL_NAMES:
    for head in HEADS:
      try:
        yield ModelConfig(model=name, head=head, vocab_size=10, tgt_vocab_size=6,
                          d_model=16, num_heads=2, num_layers=1, s4d_state_size=4)
      except ValueError:
        continue


def test_every_family_builds_for_every_compatible_head():
  built = set()
  for cfg in _every_buildable_config():
    params = init_params(cfg, jax.random.key(0))
    # eval_shape counting agrees with counting real arrays.
    assert count_params(params) == param_count(cfg) > 0
    built.add((cfg.model, cfg.head))
  assert {name for name, _ in built} == set(MODEL_NAMES)
  assert ('lstm_attention', 'seq2seq') in built and ('mamba', 'lm') in built


def test_match_d_model_brings_families_to_the_same_size():
  target = 60_000
  for name in ('lstm', 'transformer', 'mamba', 's4d'):
    cfg = match_d_model(ModelConfig(model=name, head='lm', vocab_size=32, num_layers=2),
                        target)
    count = param_count(cfg)
    # The next width up or down would be further from the target.
    step = width_multiple(cfg)
    for other in (cfg.d_model - step, cfg.d_model + step):
      if other > 0:
        assert abs(param_count(cfg.replace(d_model=other)) - target) >= abs(count - target)
