"""Comparison report, experiment 7 (scale): the ladder of budgets, smoke sizes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.comparison import scale
from experiments.comparison.suite import SUITES
from seqjax.models.config import ModelConfig
from seqjax.models.sizing import param_count, width_multiple

SMOKE = SUITES['smoke']
SIZES = scale.SIZES['smoke']
FAMILIES = ['lstm']  # one family keeps the test fast; the ladder is the point


@pytest.fixture(scope='module')
def finding(tmp_path_factory):
  outdir = str(tmp_path_factory.mktemp('scale'))
  data_dir = str(tmp_path_factory.mktemp('data'))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('SEQJAX_DATA_DIR', data_dir)
    return outdir, scale.run(SMOKE, FAMILIES, outdir, seed=0)


def test_one_record_per_family_and_budget_with_growing_sizes(finding):
  _, result = finding
  rows = result.records
  assert [(r['family'], r['budget']) for r in rows] == [
      (f, b) for f in FAMILIES for b in SIZES.budgets]
  for family in FAMILIES:
    params = [r['params'] for r in rows if r['family'] == family]
    assert params == sorted(params) and len(set(params)) == len(params)
  # tiny_shakespeare is not prepared in the empty data dir, so the synthetic task is used.
  assert {r['task'] for r in rows} == {'mqar'}


def test_widths_are_the_closest_match_to_each_budget(finding):
  """The tolerance: widths move in steps of ``width_multiple``, so the best a match can do
  is the width whose count is nearest the budget. Check that against both neighbours,
  counted independently from the run's saved model config."""
  _, result = finding
  for r in result.records:
    cfg = ModelConfig.from_mapping(r['model_cfg'])
    assert cfg.d_model == r['d_model'] and cfg.num_layers == SIZES.num_layers
    assert param_count(cfg) == r['params']
    step = width_multiple(cfg)
    miss = abs(r['params'] - r['budget'])
    for d in (cfg.d_model - step, cfg.d_model + step):
      if d >= step:
        assert miss <= abs(param_count(cfg.replace(d_model=d)) - r['budget'])


def test_throughput_and_loss_are_finite_and_consistent(finding):
  outdir, result = finding
  for r in result.records:
    assert np.isfinite(r['tokens_per_s']) and r['tokens_per_s'] > 0
    assert np.isfinite(r['ms_per_step']) and r['ms_per_step'] > 0
    # tokens/s is the tokens of one batch over one step's time.
    assert r['tokens_per_s'] * r['ms_per_step'] / 1e3 == pytest.approx(
        r['batch_size'] * r['seq_len'], rel=1e-9)
    assert len(r['test_losses']) == SMOKE.seeds and all(
        np.isfinite(v) and v > 0 for v in r['test_losses'])
    assert r['test_loss'] == pytest.approx(np.mean(r['test_losses']))
    assert 0.0 <= r['test_token_accuracy'] <= 1.0
    assert r['devices'] >= 1 and r['steps'] == SIZES.steps
  for name in result.figures:
    assert os.path.getsize(os.path.join(outdir, name)) > 1000
  assert result.verdict.startswith('Not measured')
  assert 'published reference figure' in result.measured.lower()


def test_tiny_shakespeare_is_used_when_prepared(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQJAX_DATA_DIR', str(tmp_path))
  with tfds.testing.mock_data(num_examples=4):
    task, options, config_name = scale.lm_task(SIZES, seed=0)
  assert task == 'tiny_shakespeare' and config_name == 'base'
  # Fixed splits: the synthetic split sizes are removed.
  assert options['num_train'] is None and options['seq_len'] == SIZES.seq_len
