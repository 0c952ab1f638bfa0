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
  logits ``[batch, num_classes]`` (``num_classes == 1``: a regression output).

  With ``cfg.num_segments == 2`` the inputs are a pair of right-padded documents
  ``[batch, 2 * L]``; each is encoded and pooled on its own (padding inside the pair is
  masked), and ``[u, v, u * v, u - v]`` goes through a two-layer ReLU MLP to the logits:
  the dual encoder of LRA's Retrieval task (Tay et al. 2021; the NLI-style interaction
  of Conneau et al. 2017).
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.backbone = make_backbone(cfg, causal=cfg.family.runs_causal(cfg))
    self.head_drop = nn.Dropout(cfg.dropout)
    self.head = nn.Dense(cfg.num_classes, name='head')
    if cfg.num_segments == 2:
      self.pair_mlp = (nn.Dense(cfg.mlp_hidden or cfg.d_model, name='pair_mlp1'),
                       nn.Dense(max((cfg.mlp_hidden or cfg.d_model) // 2, 1),
                                name='pair_mlp2'))

  def encode(self, inputs: Array, mask: Array, deterministic: bool = True) -> Array:
    """Pooled features ``[batch, d]`` of ``inputs`` ``[batch, time]`` (one segment)."""
    hidden = self.backbone(inputs, mask, deterministic=deterministic)
    # A stacked non-causal RNN's output is [forward half, backward half].
    bidirectional = self.cfg.backbone == 'stacked' and not self.cfg.family.streams
    return pool(hidden, mask, self.cfg.pooling, bidirectional)

  def __call__(self, inputs: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    if mask is None:
      mask = (inputs != 0) if self.cfg.vocab_size else jnp.ones(inputs.shape[:2], bool)
    if self.cfg.num_segments == 1:
      pooled = self.encode(inputs, mask, deterministic)
    else:
      pooled = self._pair(inputs, mask, deterministic)
    pooled = self.head_drop(pooled, deterministic=deterministic)
    return self.head(pooled.astype(jnp.float32))

  def _pair(self, inputs: Array, mask: Array, deterministic: bool) -> Array:
    batch, time = inputs.shape
    if time % 2:
      raise ValueError(f'a document pair needs an even length [batch, 2 * L]; got {time}')
    # Both documents of every pair in one backbone call: [2 * batch, L].
    docs = inputs.reshape(batch * 2, time // 2)
    doc_mask = mask.reshape(batch * 2, time // 2) & (docs != 0)
    u, v = jnp.split(self.encode(docs, doc_mask, deterministic).reshape(batch, 2, -1), 2, 1)
    u, v = u[:, 0], v[:, 0]
    features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
    for layer in self.pair_mlp:
      features = nn.relu(layer(features))
    return features


def article_lstm_classifier(vocab_size: int, embed_dim: int, hidden_dim: int,
                            num_classes: int, num_layers: int = 2) -> ModelConfig:
  """The config of the article's ``LSTMClassifier(vocab_size, embed_dim, hidden_dim,
  num_classes, num_layers)``."""
  return ModelConfig(model='bilstm', head='classifier', backbone='stacked',
                     vocab_size=vocab_size, embed_dim=embed_dim, d_model=hidden_dim,
                     num_classes=num_classes, num_layers=num_layers, dropout=0.3,
                     pooling='final_states')
