"""Your own CSV/TSV of (text, label) rows as classification (``task='csv'``).

    python -m experiments.train --config=experiments/configs/csv.py \
        --config.task_options.path=reviews.csv --workdir=runs/reviews

Columns by header name or 0-based index (``text_column``, default 'text' or 0;
``label_column``, default 'label' or 1; ``header=False`` for none); labels may be class
names or integers. A word vocabulary (20,000 most frequent) is built from the training
rows; texts longer than ``max_len`` (256) words are cut (``truncate=False`` makes that an
error naming the row). Model: the article's LSTMClassifier (experiments/configs/
_classifier.py).
"""

import ml_collections

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  c.task = 'csv'
  placeholder = ml_collections.config_dict.placeholder
  c.task_options = ml_collections.ConfigDict({
      'path': placeholder(str),  # required: your file
      'text_column': placeholder(str), 'label_column': placeholder(str), 'header': True,
      'delimiter': placeholder(str), 'num_classes': placeholder(int),
      'tokenizer': 'word', 'max_len': 256, 'truncate': True, 'max_vocab': 20000,
      'min_count': 1, 'validation_fraction': 0.1, 'test_fraction': 0.1})
  c.model_cfg.max_len = 256
  return _classifier.article_lstm_classifier(c)
