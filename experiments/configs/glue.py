"""GLUE (Wang et al. 2019), any task: ``--config.task=glue/<name>`` with name one of cola,
sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli (default sst2). Each reports its GLUE metric:
MCC for CoLA, F1 and accuracy for MRPC/QQP, Pearson and Spearman for STS-B (a
regression), accuracy otherwise; MNLI tests on validation_matched, or
``--config.task_options.test_split=validation_mismatched``. Sentence pairs are joined
with a separator. Words (20,000 most frequent of the training split), first 128 kept;
model: the article's BiLSTM classifier (experiments/configs/_classifier.py), in the
spirit of GLUE's BiLSTM baselines. Needs ``python -m scripts.prepare_data
--datasets=glue/<name>`` once."""

import ml_collections

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  c.task = 'glue/sst2'
  c.task_options = ml_collections.ConfigDict({
      'tokenizer': 'word', 'max_len': 128, 'truncate': True, 'max_vocab': 20000,
      'min_count': 1, 'validation_fraction': 0.1})
  c.model_cfg.max_len = 128
  return _classifier.article_lstm_classifier(c)
