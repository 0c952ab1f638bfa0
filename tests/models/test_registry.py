"""Building models by name, the config as the single source of truth (validation, field
roles, same names in config and layer, old saved configs), parameter counting and size
matching."""

from __future__ import annotations

import dataclasses
import random

import jax
import pytest

from experiments.configs.base import TASK_FIXED, model_defaults
from seqjax.data.spec import TaskSpec
from seqjax.models.config import HEADS, ModelConfig, Role, field_names
from seqjax.models.families import FAMILIES, MODEL_NAMES
from seqjax.models.registry import build_model, example_inputs, init_params
from seqjax.models.sizing import (count_params, first_reaching, match_d_model, param_count,
                                  width_multiple)
from seqjax.training.configuration import NON_SHAPE_FIELDS, check_same_shape


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
    (dict(model='bilstm', head='classifier', d_model=31), 'even'),
    (dict(d_model='64'), "d_model='64' must be of type int"),
    (dict(causal=1), 'causal=1 must be of type bool'),
    (dict(impl='scan:fft'), r'scan:fft is not valid; choose scan:sequential'),
    (dict(impl='flash:on'), "unknown site 'flash'"),
    (dict(model='transformer', positions='rope', num_heads=64), 'even head width'),
])
def test_impossible_configs_fail_naming_the_field(kwargs, culprit):
  with pytest.raises(ValueError, match=culprit):
    ModelConfig(**kwargs)


def test_field_roles_are_the_only_source_of_the_field_sets():
  assert set(NON_SHAPE_FIELDS) == set(field_names(Role.IMPLEMENTATION)) == {
      'dropout', 'dtype', 'impl', 'attention_chunk', 'mlstm_chunk', 'mamba2_chunk'}
  assert set(TASK_FIXED) == set(field_names(Role.TASK))
  assert set(model_defaults()) == set(field_names()) - set(TASK_FIXED)
  every = set(field_names())
  assert every == {f.name for f in dataclasses.fields(ModelConfig)}
  assert every == set(field_names(Role.SHAPE)) | set(TASK_FIXED) | set(NON_SHAPE_FIELDS)
  # A task sets exactly the TASK fields its head reads, by their shared names.
  kinds = {'classification': dict(num_classes=3), 'regression': dict(num_classes=0),
           'token': {}, 'seq2seq': dict(tgt_vocab_size=9)}
  for kind, extra in kinds.items():
    spec = TaskSpec('t', kind, vocab_size=11, **extra)
    fields = spec.model_fields()
    assert set(fields) == set(field_names(Role.TASK, head=spec.head)) - {'model'}
    ModelConfig(model='lstm_attention' if kind == 'seq2seq' else 'lstm', **fields)
  assert TaskSpec('t', 'regression', vocab_size=0, input_features=2).model_fields()[
      'num_classes'] == 1


@pytest.mark.parametrize('name', [n for n, f in FAMILIES.items() if f.build is not None])
def test_family_fields_reach_the_layer_attribute_of_the_same_name(name):
  """Every field marked with a family is an attribute of that family's layer, and the
  builder carries a changed value through (config and layer say the same thing)."""
  family = FAMILIES[name]
  cfg = ModelConfig(model=name, head='classifier', d_model=16, num_heads=2)
  meta = {f.name: f.metadata for f in dataclasses.fields(ModelConfig)}
  for field in (*field_names(family=name), 'impl'):
    default = getattr(cfg, field)
    if field == 'impl':
      value = ','.join(f'{s.site}:{s.choices[-1]}' for s in family.switches)
    elif meta[field]['choices']:
      value = next(c for c in meta[field]['choices'] if c != default)
    else:
      value = default * 2
    mixer = family.build(cfg.replace(**{field: value}), True in family.causal)
    assert getattr(mixer, field) == value, field


def test_old_saved_configs_load_with_one_line_notice():
  """Configs saved before the implementation switch: their old fields become impl, old
  defaults become auto, and a resumed run compares them in today's names."""
  old = {**ModelConfig(model='s4d').to_dict(), 'scan_backend': 'associative',
         's4d_mode': 'scan', 'mamba_scan_impl': 'fused', 'attention_impl': 'exact',
         'hoist_input_projection': True}
  del old['impl']
  with pytest.warns(FutureWarning, match=r"scan_backend, s4d_mode, mamba_scan_impl, "
                    r"attention_impl, hoist_input_projection are no longer fields; read as "
                    r"impl='scan:associative,s4d:scan'"):
    cfg = ModelConfig.from_mapping(old)
  assert cfg.replace(impl='auto') == ModelConfig(model='s4d')
  with pytest.warns(FutureWarning):
    check_same_shape(old, ModelConfig(model='s4d'), '/tmp/run')  # no shape difference


def test_every_family_builds_for_every_compatible_head():
  built = set()
  for name in MODEL_NAMES:
    for head in HEADS:
      try:
        cfg = ModelConfig(model=name, head=head, vocab_size=10, tgt_vocab_size=6,
                          d_model=16, num_heads=2, num_layers=1, s4d_state_size=4)
      except ValueError:
        continue
      # Tracing init runs every layer's setup and shapes without compiling.
      shapes = jax.eval_shape(build_model(cfg).init, jax.random.key(0),
                              *example_inputs(cfg))['params']
      assert count_params(shapes) == param_count(cfg) > 0
      built.add((name, head))
  assert {name for name, _ in built} == set(MODEL_NAMES)
  assert {(n, h) for n in MODEL_NAMES for h in FAMILIES[n].supported_heads} == built
  # Counting real arrays agrees with counting shapes.
  cfg = ModelConfig(model='lstm', vocab_size=10, d_model=8, num_layers=1)
  assert count_params(jax.jit(lambda k: init_params(cfg, k))(jax.random.key(0))) == \
      param_count(cfg)


def test_match_d_model_brings_families_to_the_same_size():
  target = 60_000
  for name in ('lstm', 'transformer', 'mamba', 's4d', 'xlstm', 'griffin'):
    cfg = match_d_model(ModelConfig(model=name, head='lm', vocab_size=32, num_layers=2),
                        target)
    count = param_count(cfg)
    # The next width up or down would be further from the target.
    step = width_multiple(cfg)
    for other in (cfg.d_model - step, cfg.d_model + step):
      if other > 0:
        assert abs(param_count(cfg.replace(d_model=other)) - target) >= abs(count - target)


def test_width_search_finds_the_first_width_reaching_the_target():
  """``first_reaching`` against a linear scan, on non-decreasing counts of every shape the
  quadratic guess can get wrong: exact quadratics, steps with plateaus, random jumps,
  targets below the first count and above the last."""
  rng = random.Random(0)
  for _ in range(2000):
    top = rng.randint(1, 300)
    kind = rng.choice(['quadratic', 'plateaus', 'random'])
    if kind == 'quadratic':
      values = [3 * k * k + 40 * k + 7 for k in range(1, top + 1)]
    elif kind == 'plateaus':
      values = [1000 * (k // rng.randint(1, 9) + 1) for k in range(1, top + 1)]
    else:
      values = [rng.randint(0, 10**6) for _ in range(top)]
    values.sort()
    target = rng.choice([rng.choice(values), rng.randint(-10, 2 * 10**6), values[0] - 1,
                         values[-1] + 1])
    calls = []
    got = first_reaching(lambda k: calls.append(k) or values[k - 1], target, top)
    want = next((k for k in range(1, top + 1) if values[k - 1] >= target), top)
    assert got == want, (kind, top, target)
    assert all(1 <= k <= top for k in calls)
