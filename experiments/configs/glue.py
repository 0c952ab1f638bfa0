"""GLUE (Wang et al. 2019), any task: ``--config.task=glue/<name>`` with name one of cola,
sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli (default sst2). Each reports its GLUE metric:
MCC for CoLA, F1 and accuracy for MRPC/QQP, Pearson and Spearman for STS-B (a
regression), accuracy otherwise. Every task tests on its GLUE validation split (the test
labels are hidden); MNLI on validation_matched, or ``--config.task=glue/mnli
--config.task_options.test_split=validation_mismatched``. Sentence pairs are joined
with a separator. Words (20,000 most frequent of the training split), first 128 kept.

Model and training are seqjax's own defaults, not GLUE's baselines (which build on
pretrained ELMo representations): the article's BiLSTM classifier, trained from scratch
(experiments/configs/_classifier.py says why). Needs ``python -m scripts.prepare_data
--datasets=glue/<name>`` once."""

from experiments.configs import _classifier, base


def get_config():
  c = base.get_config()
  # Every GLUE task has the same options: any --config.task=glue/<name> takes these.
  base.set_task(c, 'glue/sst2')  # words, first 128 kept, 20,000-word vocabulary
  c.model_cfg.max_len = 128
  return _classifier.article_lstm_classifier(c)
