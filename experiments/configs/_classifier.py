"""The article's ``LSTMClassifier`` as model settings for the text-classification configs
(csv, imdb_words, glue): embedding 128, a 2-layer bidirectional LSTM of 256 per direction,
the final states of both directions, dropout 0.3, Adam at 1e-3 (the article's PyTorch
example; seqjax.models.classifier.article_lstm_classifier)."""


def article_lstm_classifier(c):
  c.model = 'bilstm'
  c.model_cfg.update(backbone='stacked', embed_dim=128, d_model=256, num_layers=2,
                     dropout=0.3, pooling='final_states')
  c.update(batch_size=32, learning_rate=1e-3, num_steps=2000, warmup_steps=100,
           eval_every=250, checkpoint_every=250)
  return c
