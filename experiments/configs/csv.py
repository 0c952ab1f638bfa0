r"""Your own CSV/TSV of (text, label) rows as classification (``task='csv'``).

    python -m experiments.train --config=experiments/configs/csv.py \
        --config.task_options.path=reviews.csv --workdir=runs/reviews

Columns by header name or 0-based index (``text_column``, default 'text' or 0;
``label_column``, default 'label' or 1; ``header=False`` for none); labels may be class
names or integers. A word vocabulary (20,000 most frequent) is built from the training
rows; texts longer than ``max_len`` (256) words are cut (``truncate=False`` makes that an
error naming the row). Model and training are seqjax's own defaults (no paper covers
your data): the article's LSTMClassifier, trained from scratch
(experiments/configs/_classifier.py says why).
"""

import ml_collections

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  # path: required, your file. Cut long texts rather than stop (the task's default).
  base.set_task(c, 'csv', truncate=True,
                num_classes=ml_collections.config_dict.placeholder(int))
  c.model_cfg.max_len = 256
  return _classifier.article_lstm_classifier(c)
