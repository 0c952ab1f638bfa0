"""Sequence classifier (or regressor): backbone, pooling over time, dropout, linear.

With ``backbone='stacked'``, ``model='bilstm'``, ``pooling='final_states'`` and dropout 0.3
this is the article's ``LSTMClassifier``: embedding with padding id 0, a 2-layer
bidirectional LSTM with dropout between layers, the last layer's final forward and backward
hidden states concatenated (PyTorch's ``torch.cat([h_n[-2], h_n[-1]])``), dropout, linear.
``article_lstm_classifier`` builds that config. One difference is deliberate: seqjax honours
the padding mask, so on a padded batch it matches PyTorch run with packed sequences
(``pack_padded_sequence``) rather than a state dragged through padding tokens; on unpadded
input the two are identical.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.pooling import pool
from seqjax.models.backbone import make_backbone
from seqjax.models.config import ModelConfig

Array = jax.Array


class SequenceClassifier(nn.Module):
  """``inputs`` ``[batch, time]`` ids (0 = padding) or ``[batch, time, features]`` ->
  logits ``[batch, num_classes]`` (``num_classes == 1``: a regression output)."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.backbone = make_backbone(cfg, causal=cfg.family.runs_causal(cfg))
    self.head_drop = nn.Dropout(cfg.dropout)
    self.head = nn.Dense(cfg.num_classes, name='head')

  def __call__(self, inputs: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    if mask is None:
      mask = (inputs != 0) if self.cfg.vocab_size else jnp.ones(inputs.shape[:2], bool)
    hidden = self.backbone(inputs, mask, deterministic=deterministic)
    # A stacked non-causal RNN's output is [forward half, backward half].
    bidirectional = self.cfg.backbone == 'stacked' and not self.cfg.family.streams
    pooled = pool(hidden, mask, self.cfg.pooling, bidirectional)
    pooled = self.head_drop(pooled, deterministic=deterministic)
    return self.head(pooled.astype(jnp.float32))


def article_lstm_classifier(vocab_size: int, embed_dim: int, hidden_dim: int,
                            num_classes: int, num_layers: int = 2) -> ModelConfig:
  """The config of the article's ``LSTMClassifier(vocab_size, embed_dim, hidden_dim,
  num_classes, num_layers)``."""
  return ModelConfig(model='bilstm', head='classifier', backbone='stacked',
                     vocab_size=vocab_size, embed_dim=embed_dim, d_model=hidden_dim,
                     num_classes=num_classes, num_layers=num_layers, dropout=0.3,
                     pooling='final_states')
