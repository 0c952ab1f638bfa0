"""IMDB sentiment (Maas et al. 2011) from words, first 512 kept, 20,000-word vocabulary of
the training split; the article's LSTMClassifier (experiments/configs/_classifier.py).
Needs ``python -m scripts.prepare_data --datasets=imdb_reviews`` once."""

import ml_collections

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  c.task = 'imdb_words'
  c.task_options = ml_collections.ConfigDict({
      'tokenizer': 'word', 'max_len': 512, 'truncate': True, 'max_vocab': 20000,
      'min_count': 1, 'validation_fraction': 0.1})
  c.model_cfg.max_len = 512
  return _classifier.article_lstm_classifier(c)
