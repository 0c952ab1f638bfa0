"""Claim: on real NLP tasks Transformers overtook LSTMs (the article's GLUE table: ELMo's
BiLSTM 68.7 vs BERT-base 79.6). Measured on sentiment classification trained from
scratch, every family matched to the same parameter count and budget: SST-2 or IMDB when
prepared as TFDS datasets, else the user's CSV, else nothing (and the report says how to
prepare the data).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from experiments.comparison import cells, plots, pool, stats
from experiments.comparison.report import Finding, markdown_table
from experiments.comparison.suite import Suite, whole_input_classifier
from seqjax.data.errors import DataError, DatasetNotPreparedError
from seqjax.data.real_common import default_data_dir
from seqjax.data.registry import get_task
from seqjax.data.spec import Task


@dataclasses.dataclass(frozen=True)
class TextSizes:
  target_params: int
  num_layers: int
  steps: int
  batch_size: int
  max_len: int          # tokens kept per text (longer texts are truncated, as in LRA)
  max_vocab: int        # word vocabulary: small, so embeddings do not eat the budget
  max_d_model: int
  tfds_tasks: tuple[str, ...]   # tried in order; the first prepared one is used


SIZES = {
    'smoke': TextSizes(target_params=12_000, num_layers=1, steps=40, batch_size=8,
                       max_len=12, max_vocab=64, max_d_model=128,
                       tfds_tasks=('glue/sst2', 'imdb_words')),
    # SST-2 first on CPU: its test split (GLUE validation) has 872 short sentences, while
    # IMDB's has 25,000 long reviews, which alone would take minutes to evaluate.
    # SST-2's texts are single sentences: 32 words keeps most of each at half the cost.
    'quick': TextSizes(target_params=150_000, num_layers=2, steps=200, batch_size=32,
                       max_len=32, max_vocab=2000, max_d_model=1024,
                       tfds_tasks=('glue/sst2', 'imdb_words')),
    'standard': TextSizes(target_params=150_000, num_layers=2, steps=400, batch_size=32,
                          max_len=32, max_vocab=2000, max_d_model=1024,
                          tfds_tasks=('glue/sst2', 'imdb_words')),
    'full': TextSizes(target_params=2_000_000, num_layers=4, steps=4000, batch_size=64,
                      max_len=512, max_vocab=20000, max_d_model=8192,
                      tfds_tasks=('imdb_words', 'glue/sst2')),
}

TFDS_NAMES = {'glue/sst2': 'glue/sst2', 'imdb_words': 'imdb_reviews/plain_text'}
CLAIM = ('On language tasks Transformers overtook LSTMs: the article\'s GLUE table has '
         'ELMo (BiLSTM) at 68.7 and BERT-base (Transformer) at 79.6, both in 2018; it also '
         'advises an LSTM when the data set is small and compute is short.')
PREDICTION = ('The GLUE gap comes from pre-training at scale, which this run does not do. '
              'Trained from scratch with the same small budget, the claim predicts the '
              'Transformer at least matches the LSTM on sentiment classification.')


def _model_label(model: str, overrides: dict) -> str:
  if overrides.get('causal') is not False:
    return model
  return model + (' encoder' if model == 'transformer' else ' (both ways)')


def prepare_command(data_dir: str) -> str:
  return ('python -c "import tensorflow_datasets as tfds; '
          "tfds.builder('glue/sst2', data_dir='" + data_dir + "', "
          "file_format='array_record').download_and_prepare()\"")


def open_dataset(sizes: TextSizes, seed: int, csv_path: str | None
                 ) -> tuple[str, dict[str, Any], Task] | str:
  """``(task name, options for train_run, task)`` of the first usable data set, or a
  one-line reason why the CSV could not be used ('' when there was none).

  The word vocabulary is built here once and handed to every run as a saved tokenizer,
  so all families see identical inputs and nothing is rebuilt per run.
  """
  common = {'tokenizer': 'word', 'max_len': sizes.max_len, 'truncate': True,
            'max_vocab': sizes.max_vocab}
  for name in sizes.tfds_tasks:
    try:
      task = get_task(name, seed=seed, **common)
    except DatasetNotPreparedError:
      continue
    return name, _fixed_splits(common, task), task
  if csv_path:
    try:
      task = get_task('csv', seed=seed, path=csv_path, **common)
    except DataError as err:
      return f'the CSV could not be used: {err}'
    return 'csv', {**_fixed_splits(common, task), 'path': csv_path}, task
  return ''


def _fixed_splits(common: dict[str, Any], task: Task) -> dict[str, Any]:
  # None removes the synthetic split-size options: these datasets have fixed splits.
  return {**common, 'tokenizer': task.metadata['tokenizer'], 'num_train': None,
          'num_validation': None, 'num_test': None}


def majority_rate(task: Task) -> float:
  """Accuracy of always predicting the test split's most frequent label (chance level)."""
  # A TFDS task's opener exposes its raw records: reading labels there skips tokenising
  # every test text; other tasks go through their examples.
  split = task.open.source('test') if hasattr(task.open, 'source') else task.dataset('test')
  labels = np.array([int(np.asarray(split[i]['label'])) for i in range(len(split))])
  return float(np.bincount(labels).max() / len(labels))


def run(suite: Suite, families: list[str], outdir: str, seed: int,
        csv_path: str | None = None) -> Finding:
  sizes = suite.sized(SIZES)
  suite = suite.with_seed(seed)
  opened = open_dataset(sizes, seed, csv_path)
  if isinstance(opened, str):
    return _not_measured(opened, sizes)
  name, options, task = opened
  num_test = len(task.dataset('test'))
  chance = majority_rate(task)
  # Classification reads the whole text in every family (the article's classifier is
  # a bidirectional LSTM; a Transformer encoder; the others both ways).
  models = [whole_input_classifier(family) for family in families]
  jobs = [dict(task=name, family=model, seeds=suite.seed_list,
               learning_rates=suite.learning_rates,
              lr_selection=suite.lr_selection, steps=sizes.steps,
               eval_every=max(sizes.steps // 4, 1), solved=None, chance=chance,
               task_options=options,
               model_overrides={'num_layers': sizes.num_layers, **overrides},
               target_params=sizes.target_params, batch_size=sizes.batch_size,
               max_d_model=sizes.max_d_model, config_name='base')
          for model, overrides in models]
  records = []
  for family, (model, overrides), cell in zip(families, models,
                                              pool.run_cells(jobs, suite.workers)):
    records.append({**cell, 'dataset': name, 'family': family,
                    'model': _model_label(model, overrides), 'max_len': sizes.max_len,
                    'test_examples': num_test, 'majority_baseline': chance})
  figure = 'realtext.png'
  plots.bars([r['model'] for r in records], [r['score_mean'] for r in records],
             errors=[(r['score_mean'] - r['score_min'], r['score_max'] - r['score_mean'])
                     for r in records], reference=chance, reference_label='majority class',
             path=os.path.join(outdir, figure),
             title=f'{name}: test accuracy after {sizes.steps} steps, mean and min-max '
                   'over seeds', ylabel='test accuracy (fraction correct)')
  where = {'csv': f'the user\'s CSV `{csv_path}`'}.get(name, f'TFDS `{name}`')
  if csv_path and name != 'csv':
    where += f' (prepared, so it takes precedence over --text_csv={csv_path})'
  rows = [{**r, 'test accuracy': (cells.OUT_OF_MEMORY if cells.out_of_memory(r) else
                                  stats.format_spread(r['scores']))} for r in records]
  measured = (f'Data: {where}, {num_test} test examples, word tokens (vocabulary '
              f'<= {sizes.max_vocab:,} from the training split), texts cut to '
              f'{sizes.max_len} tokens. Every family: ~{sizes.target_params:,} parameters, '
              f'{sizes.num_layers} layers, mean-pooled classifier that reads the whole text '
              '(bidirectional LSTM, Transformer encoder, S4D and Mamba read both ways), '
              f'{sizes.steps} steps of batch {sizes.batch_size}, no pre-training, '
              f'{len(suite.seed_list)} seeds x rates {list(suite.learning_rates)} (chosen '
              'on validation accuracy; no early stop). Test accuracy: mean [min-max] over '
              f'seeds; one seed\'s binomial standard error is about '
              f'{math.sqrt(0.25 / num_test):.3f}.\n\n' +
              markdown_table(rows, ['family', 'model', 'params', 'learning_rate',
                                    'test accuracy', 'majority_baseline'],
                             {'majority_baseline': '.3f', 'learning_rate': 'g'}))
  return Finding(experiment='realtext', title='8. Real text', claim=CLAIM,
                 prediction=PREDICTION, measured=measured, verdict=_verdict(records),
                 figures=[figure], records=records)


def _not_measured(csv_error: str | None, sizes: TextSizes) -> Finding:
  data_dir = default_data_dir()
  names = ' or '.join(f'`{TFDS_NAMES[t]}`' for t in sizes.tfds_tasks)
  if csv_error:
    why = f'no prepared TFDS dataset, and {csv_error}'
  else:
    why = f'neither {names} is prepared in {data_dir} and no CSV was given'
  how = (f'No sentiment data: {why}. To measure it, prepare SST-2 on a machine with '
         f'network access, `{prepare_command(data_dir)}` (IMDB: the same with '
         '`imdb_reviews/plain_text`), and copy the directory here; or pass '
         '`--text_csv=<path>`, a CSV with a header row and columns `text` and `label`.')
  return Finding(experiment='realtext', title='8. Real text', claim=CLAIM,
                 prediction=PREDICTION, measured=how, verdict=f'Not measured. {how}',
                 figures=[], records=[])


def _verdict(records) -> str:
  by = {r['family']: r for r in records}
  if not {'lstm', 'transformer'} <= set(by):
    return 'Not measured (needs both lstm and transformer).'
  got = cells.compare(by['transformer'], by['lstm'])
  text = (f'{got.text}; majority class {by["transformer"]["majority_baseline"]:.3f}.')
  if not got.measured:
    return 'Not measured: ' + text.removeprefix('not measured: ')
  if got.winner is None:
    return ('Not separable: trained from scratch at this budget the two overlap, so the '
            'article\'s GLUE gap (pre-trained models) does not show up here. ' + text)
  if got.winner == 'transformer':
    return 'Supported: the Transformer encoder beats the bidirectional LSTM. ' + text
  return ('Contradicted at this budget: the bidirectional LSTM beats the Transformer '
          'encoder (from scratch, small data; the article\'s GLUE gap is for pre-trained '
          'models). ' + text)
