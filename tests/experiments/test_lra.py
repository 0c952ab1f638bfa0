"""experiments/lra.py: a tiny ListOps run lands in the table beside the published figures,
labelled as reduced; an unprepared task gets a row saying how to prepare it."""

from __future__ import annotations

import json
import os

import pytest

from experiments import lra
from experiments.configs import lra_settings
from seqjax.data.registry import get_task
from seqjax.models.families import FAMILIES
from seqjax.training import configuration


def test_table_holds_the_run_and_the_published_figures(tmp_path):
  options = {'listops': {'max_len': 24, 'min_len': 4, 'max_depth': 2, 'max_args': 3,
                         'num_train': 32, 'num_validation': 8, 'num_test': 16}}
  # min_gru: one of the families added after the first LRA table (any registered family).
  records = lra.run(['listops', 'retrieval'], ['min_gru'], 'cpu', str(tmp_path),
                    options=options, steps=2, data_dir=str(tmp_path / 'data'),
                    model_overrides={'d_model': 8, 'num_layers': 1})
  listops, retrieval = records
  assert listops['status'] == 'ok' and listops['length'] == 24 and listops['steps'] == 2
  # The accuracy in the table is the one the trainer wrote for the test split.
  lines = (tmp_path / 'runs' / 'listops_min_gru' / 'metrics.jsonl').read_text().splitlines()
  test = [json.loads(l) for l in lines if json.loads(l).get('split') == 'test'][-1]
  assert listops['test_accuracy'] == pytest.approx(test['accuracy'])
  assert retrieval['test_accuracy'] is None
  assert retrieval['status'].startswith('not run:') and 'prepare_data' in retrieval['status']
  md = (tmp_path / 'lra.md').read_text()
  assert 'Reduced size, run on a CPU' in md and 'not* comparable' in md
  assert 'a small model and 2 training steps' in md  # the steps these runs took
  row = next(l for l in md.splitlines() if l.startswith('| listops |'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells[1] == '24 tokens (paper 2,000)'
  assert cells[2] == f"{listops['test_accuracy'] * 100:.2f}"
  assert cells[3:] == [f'{lra.PUBLISHED[p]["listops"]:.2f}' for p in lra.PUBLISHED]
  saved = json.loads((tmp_path / 'lra.json').read_text())
  assert saved['scale'] == 'cpu' and len(saved['records']) == 2
  assert os.path.exists(tmp_path / 'lra.csv')
  # A later invocation adds its pairs to the table and keeps the earlier ones.
  lra.run(['retrieval'], ['s4d'], 'cpu', str(tmp_path), data_dir=str(tmp_path / 'data'))
  saved = json.loads((tmp_path / 'lra.json').read_text())
  assert [(r['task'], r['family']) for r in saved['records']] == [
      ('listops', 'min_gru'), ('retrieval', 's4d'), ('retrieval', 'min_gru')]
  assert '| task | length (this run) | s4d | min_gru |' in (tmp_path / 'lra.md').read_text()


def test_paper_scale_uses_the_benchmark_lengths():
  lengths = {t: lra_settings.sequence_length(lra_settings.settings(t, 'paper'))
             for t in lra_settings.TASKS}
  assert lengths == {'listops': 2000, 'text': 4096, 'retrieval': 8000, 'image': 1024,
                     'pathfinder': 1024, 'pathx': 16384}
  config = lra.make_config('pathx', 'transformer', 'paper')
  assert config.model_cfg.max_len == 16384 and config.model_cfg.impl == 'attention:chunked'
  # Every registered family that can classify is accepted and gets a valid model.
  classifiers = [n for n, f in FAMILIES.items() if 'classifier' in f.supported_heads]
  assert list(lra.FAMILIES) == classifiers and {'mamba2', 'griffin', 'xlstm'} <= set(classifiers)
  options = lra.make_config('listops', 'lstm', 'cpu').task_options.to_dict()
  spec = get_task('listops', **options).spec
  for family in classifiers:
    cfg = configuration.model_config(lra.make_config('listops', family, 'cpu'), spec)
    assert cfg.model == family and cfg.max_len >= spec.max_len
  assert lra.parse_options(['pathx.image_size=64', 'text.tokenizer=byte']) == {
      'pathx': {'image_size': 64}, 'text': {'tokenizer': 'byte'}}
  assert lra.parse_model(['d_model=128', 'positions=rope']) == {'d_model': 128,
                                                                'positions': 'rope'}
  with pytest.raises(ValueError, match='ModelConfig field'):
    lra.parse_model(['vocab_size=3'])  # fixed by the task
  with pytest.raises(ValueError, match='task.option=value'):
    lra.parse_options(['image_size=64'])
