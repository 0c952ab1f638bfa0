"""Model settings shared by the text-classification configs (csv, imdb_words, glue).

These defaults are seqjax's own, not a paper's recipe for these tasks: the article's
``LSTMClassifier`` (embedding 128, a 2-layer bidirectional LSTM of 256 per direction, the
final states of both directions, dropout 0.3, Adam at 1e-3; the article's PyTorch example,
seqjax.models.classifier.article_lstm_classifier), trained from scratch for 2,000 steps of
32. Why: it is the model the article discusses, a run takes minutes on a CPU, and it needs
no pretrained embeddings (which seqjax does not ship). Papers that report these tasks use
other settings, e.g. GLUE's baselines (Wang et al. 2019) build on pretrained ELMo
representations, so numbers from these defaults are not comparable with theirs.
"""


def article_lstm_classifier(c):
  c.model = 'bilstm'
  c.model_cfg.update(backbone='stacked', embed_dim=128, d_model=256, num_layers=2,
                     dropout=0.3, pooling='final_states')
  c.update(batch_size=32, learning_rate=1e-3, num_steps=2000, warmup_steps=100,
           eval_every=250, checkpoint_every=250)
  return c
