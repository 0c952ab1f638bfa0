"""Config files: one per task, each valid for its task; the README's own-data commands;
``--help`` shows ``--config``; a run keeps its tokenizer on resume and evaluation."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import config_files, evaluate as evaluate_lib
from seqjax.data.registry import get_task, task_defaults, task_names
from seqjax.data.tokenizers import tokenizer_from_dict
from seqjax.training import configuration, loop, tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, 'experiments', 'configs')
HELPERS = {'__init__', 'base', 'default', 'lra_settings', '_classifier'}
NAMES = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith('.py')
               and f[:-3] not in HELPERS)
GLUE = sorted(t for t in task_names() if t.startswith('glue/'))
TEXT = 'To be, or not to be, that is the question:\nWhether tis nobler in the mind.\n' * 40


def _config(name):
  return importlib.import_module(f'experiments.configs.{name}').get_config()


def _files(tmp_path):
  text = tmp_path / 'my.txt'
  text.write_text(TEXT, encoding='utf-8')
  rows = tmp_path / 'reviews.csv'
  rows.write_text('text,label\n' + ''.join(f'review {i} was {"good" if i % 2 else "bad"},'
                                           f'{"pos" if i % 2 else "neg"}\n'
                                           for i in range(40)), encoding='utf-8')
  return {'text_file': str(text), 'csv': str(rows)}


def test_every_task_has_a_config():
  covered = {_config(n).task for n in NAMES}
  missing = [t for t in task_names() if t not in covered and not t.startswith('glue/')]
  assert not missing, f'tasks without a config file: {missing}'
  assert _config('glue').task in GLUE  # glue.py serves every GLUE task by --config.task


@pytest.mark.parametrize('name,task', [(n, None) for n in NAMES] +
                         [('glue', g) for g in GLUE])
def test_config_is_valid_for_its_task(name, task, tmp_path):
  """The file's settings pass the trainer's checks and build a ModelConfig for the task's
  spec (real datasets through tfds.testing.mock_data; synthetic specs need no data), and
  its task_options hold every option the task accepts, so each can be set by a flag."""
  config = _config(name)
  if task:
    config.task = task
  assert set(config.task_options) == set(task_defaults(config.task))
  configuration.check_config(config)
  options = config.task_options.to_dict()
  if 'path' in options:
    options['path'] = _files(tmp_path)[config.task]
  with tfds.testing.mock_data(num_examples=6):
    spec = get_task(config.task, data_dir=str(tmp_path), seed=config.seed, **options).spec
  model_cfg = configuration.model_config(config, spec)
  assert model_cfg.max_len >= spec.max_len and model_cfg.head == spec.head
  assert spec.eval_metric == 'loss' or spec.eval_metric in spec.metrics


@pytest.mark.parametrize('name,override,field,value', [
    ('text_file', 'task_options.path=my.txt', 'path', 'my.txt'),
    ('csv', 'task_options.text_column=2', 'text_column', '2'),
    ('csv', 'task_options.num_classes=3', 'num_classes', 3),
    ('pathfinder', 'task_options.path_length=9', 'path_length', 9),
    ('glue', 'task=glue/mnli --config.task_options.test_split=validation_mismatched',
     'test_split', 'validation_mismatched')])
def test_documented_overrides_parse(name, override, field, value, monkeypatch):
  """The overrides the README and the config docstrings show parse into the config (the
  field exists and is typed, even where its default is None), as train.py defines the
  flag, and the task accepts the result."""
  argv = ['train', f'--config={CONFIGS}/{name}.py',
          *(f'--config.{o}' for o in override.split(' --config.'))]
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads --config while defining
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', f'{CONFIGS}/default.py', flag_values=fv)
  fv(argv)
  assert fv.config.task_options[field] == value
  assert set(fv.config.task_options) <= set(task_defaults(fv.config.task))


def test_a_task_option_without_the_task_config_file_names_the_file(capsys):
  """With the default file, ``--config.task=text_file`` keeps the default task's options:
  the one-line error says which config file has ``path``."""
  argv = ['train', '--config.task=text_file', '--config.task_options.path=my.txt']
  with pytest.raises(SystemExit) as stop:
    config_files.check_config_args(argv, f'{CONFIGS}/default.py')
  assert stop.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: unknown config field 'path'")
  assert err[0].endswith('add --config=experiments/configs/text_file.py')


def test_help_shows_the_config_flag():
  out = subprocess.run([sys.executable, '-m', 'experiments.train', '--help'], cwd=REPO,
                       capture_output=True, text=True, timeout=120).stdout
  out = ' '.join(out.split())  # absl wraps help text
  assert '--config:' in out and 'text_file' in out and 'Train on your own data' in out


def test_text_file_run_reuses_its_tokenizer(tmp_path):
  """Resume and evaluation read the data with the saved vocabulary: after the file gains
  a new character, a rebuilt vocabulary would change vocab_size and the resume fail."""
  path = tmp_path / 'my.txt'
  path.write_text(TEXT, encoding='utf-8')
  config = _config('text_file')
  config.task_options.update(path=str(path), seq_len=16)
  config.model_cfg.update(d_model=8, num_layers=1, max_len=16)
  config.update(batch_size=4, num_steps=2, warmup_steps=1, eval_every=2,
                checkpoint_every=2, log_every=1, async_checkpoint=False, tensorboard=False)
  workdir = str(tmp_path / 'run')
  first = loop.train(config, workdir)
  assert set(first['test']) >= {'loss', 'bits_per_char', 'perplexity', 'token_accuracy'}
  assert 'sequence_accuracy' not in first['test']
  assert first['test']['bits_per_char'] == pytest.approx(first['test']['loss'] / np.log(2))
  saved = tasks.saved_task_metadata(workdir)['tokenizer']
  # Same length (so the data stream itself can resume), one new character in every line.
  path.write_text(TEXT.replace('question', 'quest§on'), encoding='utf-8')
  config.num_steps = 3
  loop.train(config, workdir)  # resumes: same vocabulary, so the same model shape
  assert tasks.saved_task_metadata(workdir)['tokenizer'] == saved
  assert '§' not in tokenizer_from_dict(saved).vocab
  result = evaluate_lib.evaluate(workdir, 'latest', 'test')
  assert result['step'] == 3 and np.isfinite(result['bits_per_char'])
  fresh = get_task('text_file', **ml_collections.ConfigDict(config.task_options).to_dict())
  assert fresh.spec.vocab_size > tokenizer_from_dict(saved).vocab_size  # what reuse avoids
