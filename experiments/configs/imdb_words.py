"""IMDB sentiment (Maas et al. 2011) from words, first 512 kept, 20,000-word vocabulary of
the training split. Model and training are seqjax's own defaults, not a paper's: the
article's LSTMClassifier, trained from scratch (experiments/configs/_classifier.py says
why). Needs ``python -m scripts.prepare_data --datasets=imdb_reviews`` once."""

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  base.set_task(c, 'imdb_words')  # words, first 512 kept, 20,000-word vocabulary
  c.model_cfg.max_len = 512
  return _classifier.article_lstm_classifier(c)
