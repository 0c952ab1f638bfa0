"""Backbones: inputs ``[batch, time]`` (token ids) or ``[batch, time, features]`` to
hidden states ``[batch, time, width]``, in parallel or one token at a time.

Two shapes of backbone:

* ``ResidualBackbone`` — embedding (+ positions for a Transformer), ``num_layers`` pre-norm
  residual blocks ``x + mixer(norm(x))``, ``x + mlp(norm(x))``, final norm. Families differ
  only in the mixer, which is what a fair comparison needs.
* ``StackedRecurrentBackbone`` — embedding with padding id 0, then one PyTorch-style
  multi-layer (bi)LSTM/GRU with dropout between layers and no residuals or norms: the
  article's ``LSTMClassifier`` body.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State, not_streamable
from seqjax.layers.block import ResidualBlock, make_norm, per_token
from seqjax.layers.embeddings import PositionalEncoding
from seqjax.models.config import ModelConfig

Array = jax.Array


class InputEmbedding(nn.Module):
  """Token ids ``[batch, time]`` -> ``[batch, time, width]`` (or continuous features via a
  Dense layer). With ``zero_padding`` the embedding of id 0 is the zero vector and gets no
  gradient, as PyTorch's ``nn.Embedding(padding_idx=0)``."""

  cfg: ModelConfig
  width: int
  zero_padding: bool = False

  def setup(self):
    if self.cfg.vocab_size:
      self.table = nn.Embed(self.cfg.vocab_size, self.width,
                            embedding_init=nn.initializers.normal(1.0), name='token_embed')
    else:
      self.proj = nn.Dense(self.width, dtype=self.cfg.compute_dtype, name='input_proj')

  def __call__(self, inputs: Array) -> Array:
    if not self.cfg.vocab_size:
      return self.proj(inputs)
    x = self.table(inputs).astype(self.cfg.compute_dtype)
    if self.zero_padding:
      x = x * (inputs != 0)[..., None].astype(x.dtype)
    return x

  def attend(self, h: Array) -> Array:
    """Tied output projection: logits ``h @ E^T`` (Press & Wolf 2017)."""
    return self.table.attend(h)


class ResidualBackbone(nn.Module):
  """Embedding, ``num_layers`` residual blocks with the family's mixer, final norm."""

  cfg: ModelConfig
  causal: bool = True

  def setup(self):
    cfg = self.cfg
    self.embed = InputEmbedding(cfg, cfg.d_model)
    # Rotary positions live inside attention; a table is added only for an order-blind
    # mixer.
    kind = cfg.positions if cfg.family.positions and cfg.positions != 'rope' else 'none'
    self.positions = PositionalEncoding(kind, cfg.max_len, cfg.d_model)
    self.embed_drop = nn.Dropout(cfg.dropout)
    self.blocks = [
        ResidualBlock(cfg.family.build(cfg, self.causal, layer), cfg.d_model,
                      cfg.mlp_hidden, dropout=cfg.dropout, norm=cfg.norm,
                      dtype=cfg.compute_dtype)
        for layer in range(cfg.num_layers)
    ]
    self.final_norm = make_norm(cfg.norm, cfg.compute_dtype)

  @property
  def width(self) -> int:
    return self.cfg.d_model

  def __call__(self, inputs: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``inputs`` ``[batch, time]`` ids or ``[batch, time, features]``, ``mask``
    ``[batch, time]`` -> ``[batch, time, d_model]``."""
    x = self.positions(self.embed(inputs))
    x = self.embed_drop(x, deterministic=deterministic)
    for block in self.blocks:
      x = block(x, mask, deterministic=deterministic)
    return per_token(self.final_norm, x)

  def init_state(self, batch_size: int) -> State:
    if not self.causal:
      raise not_streamable(f'{self.cfg.model} backbone (causal=False)')
    return {'index': jnp.zeros((), jnp.int32),
            'blocks': [block.init_state(batch_size) for block in self.blocks]}

  def step(self, state: State, input_t: Array) -> tuple[State, Array]:
    """One token: ``input_t`` ``[batch]`` ids (or ``[batch, features]``) -> ``[batch, d]``."""
    x = self.positions.at(self.embed(input_t), state['index'])
    new_blocks = []
    for block, block_state in zip(self.blocks, state['blocks']):
      block_state, x = block.step(block_state, x)
      new_blocks.append(block_state)
    return {'index': state['index'] + 1, 'blocks': new_blocks}, self.final_norm(x)


class StackedRecurrentBackbone(nn.Module):
  """Embedding (padding id 0) then one multi-layer (bi)LSTM or GRU, as PyTorch builds it
  (the family's ``stacked`` builder)."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = InputEmbedding(cfg, cfg.token_dim, zero_padding=True)
    self.rnn = cfg.family.stacked(cfg)

  @property
  def width(self) -> int:
    return self.cfg.d_model * (1 if self.cfg.family.streams else 2)

  def __call__(self, inputs: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    return self.rnn(self.embed(inputs), mask, deterministic=deterministic)

  def init_state(self, batch_size: int) -> State:
    return self.rnn.init_state(batch_size)

  def step(self, state: State, input_t: Array) -> tuple[State, Array]:
    return self.rnn.step(state, self.embed(input_t))


def make_backbone(cfg: ModelConfig, causal: bool = True) -> nn.Module:
  if cfg.backbone == 'stacked':
    return StackedRecurrentBackbone(cfg)
  return ResidualBackbone(cfg, causal=causal)
