"""LSTM encoder–decoder with Bahdanau (additive) attention (Bahdanau, Cho & Bengio 2015).

Encoder: embedding (padding id 0) and a (bidirectional) multi-layer LSTM over the source,
giving annotations ``h_j`` ``[batch, src, enc_width]``. Decoder, one target token ``i`` at a
time (``flax.linen.scan`` over time)::

    c_i, a_i = attention(s_{i-1}, h)             # eq. 5-6: context and alignment weights
    s_i      = LSTM([embed(y_{i-1}), c_i], s_{i-1})
    logits_i = W_out [s_i, c_i]

The initial decoder state is ``s_0 = tanh(W_s h_summary)`` (the paper uses the backward
encoder state at the first token; ``h_summary`` here is the concatenated final forward and
backward states). Training uses teacher forcing (``__call__``); ``greedy_decode`` feeds back
its own argmax and returns the attention matrix for plotting.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.bahdanau import BahdanauAttention
from seqjax.layers.lstm import LSTM, LSTMCell
from seqjax.layers.pooling import pool
from seqjax.models.backbone import InputEmbedding
from seqjax.models.config import ModelConfig

Array = jax.Array


def _scan_over_time(fn, length: int | None = None):
  """Lifts ``fn(module, carry, x_t, *broadcast)`` to a scan over axis 1 of ``x``."""
  return nn.scan(fn, variable_broadcast='params', split_rngs={'params': False},
                 in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=1,
                 length=length)


class EncoderDecoder(nn.Module):
  """``src`` ``[batch, src]`` ids and ``tgt_in`` ``[batch, tgt]`` ids (BOS-shifted targets)
  -> logits ``[batch, tgt, tgt_vocab]``. Id 0 is padding on both sides."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    emb, hidden = cfg.token_dim, cfg.d_model
    self.enc_width = hidden * (2 if cfg.bidirectional_encoder else 1)
    self.src_embed = InputEmbedding(cfg, emb, zero_padding=True)
    self.encoder = LSTM(emb, hidden, num_layers=cfg.num_layers,
                        bidirectional=cfg.bidirectional_encoder, dropout=cfg.dropout,
                        impl=cfg.impl, dtype=cfg.compute_dtype)
    self.bridge = nn.Dense(hidden, dtype=cfg.compute_dtype, name='bridge')
    self.tgt_embed = nn.Embed(cfg.tgt_vocab_size, emb,
                              embedding_init=nn.initializers.normal(1.0))
    self.attention = BahdanauAttention(hidden, self.enc_width, cfg.attn_dim or hidden,
                                       dtype=cfg.compute_dtype)
    self.cell = LSTMCell(emb + self.enc_width, hidden)
    self.drop = nn.Dropout(cfg.dropout)
    self.out = nn.Dense(cfg.tgt_vocab_size, dtype=cfg.compute_dtype, name='out')

  def encode(self, src: Array, src_mask: Array, deterministic: bool):
    """Annotations ``[batch, src, enc_width]``, their attention projection and ``s_0``."""
    x = self.drop(self.src_embed(src), deterministic=deterministic)
    annotations = self.encoder(x, src_mask, deterministic=deterministic)
    summary = pool(annotations, src_mask, 'final_states', self.cfg.bidirectional_encoder)
    # The decoder cell keeps its state in float32 whatever the compute dtype (as the
    # LSTM layers do), so the scan's carry has one dtype from the first step.
    h0 = jnp.tanh(self.bridge(summary)).astype(jnp.float32)
    carry = (h0, jnp.zeros_like(h0))
    return annotations, self.attention.project_keys(annotations), carry

  def _decode_step(self, carry, emb_t, annotations, projected, src_mask):
    h_prev, _ = carry
    context, weights = self.attention(h_prev, annotations, src_mask,
                                      projected_keys=projected)
    carry, h = self.cell(carry, jnp.concatenate([emb_t, context], axis=-1))
    logits = self.out(jnp.concatenate([h, context], axis=-1)).astype(jnp.float32)
    return carry, (logits, weights)

  def __call__(self, src: Array, tgt_in: Array, src_mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """Teacher forcing. Attention maps ``[batch, tgt, src]`` are sown to
    ``intermediates/attention_weights``."""
    src_mask = (src != 0) if src_mask is None else src_mask
    annotations, projected, carry = self.encode(src, src_mask, deterministic)
    emb = self.drop(self.tgt_embed(tgt_in), deterministic=deterministic)
    scan = _scan_over_time(lambda m, c, e, a, p, k: m._decode_step(c, e, a, p, k))
    _, (logits, weights) = scan(self, carry, emb, annotations, projected, src_mask)
    self.sow('intermediates', 'attention_weights', weights)
    return logits

  def greedy_decode(self, src: Array, max_len: int, bos_id: int,
                    src_mask: Array | None = None) -> tuple[Array, Array]:
    """Greedy translation: tokens ``[batch, max_len]`` and attention
    ``[batch, max_len, src]``. Tokens after an EOS are whatever the model emits; cut them
    at the first EOS when reading the output."""
    src_mask = (src != 0) if src_mask is None else src_mask
    annotations, projected, carry = self.encode(src, src_mask, deterministic=True)
    first = jnp.full((src.shape[0],), bos_id, jnp.int32)

    def step(module, state, _, ann, proj, mask):
      carry, token = state
      carry, (logits, weights) = module._decode_step(carry, module.tgt_embed(token), ann,
                                                     proj, mask)
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      return (carry, token), (token, weights)

    dummy = jnp.zeros((src.shape[0], max_len, 0))  # scan length carrier, no data
    _, (tokens, weights) = _scan_over_time(step)(self, (carry, first), dummy, annotations,
                                                 projected, src_mask)
    return tokens, weights
