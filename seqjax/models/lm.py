"""Causal language model: ``p(x_t | x_<t)`` for every causal family.

Parallel mode (training, scoring) returns logits for all positions at once; streaming mode
(``init_state`` + ``step``) feeds one token at a time and is what generation uses, so an
LSTM or SSM keeps a fixed-size state and a Transformer a KV cache. Both modes give the same
logits (tested for every family).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.layers.block import per_token
from seqjax.models.backbone import make_backbone
from seqjax.models.config import ModelConfig

Array = jax.Array


class CausalLM(nn.Module):
  """``tokens`` ``[batch, time]`` -> next-token logits ``[batch, time, vocab]`` (float32)."""

  cfg: ModelConfig

  def setup(self):
    self.backbone = make_backbone(self.cfg, causal=True)
    if not self.cfg.tie_embeddings:
      self.unembed = nn.Dense(self.cfg.vocab_size, dtype=self.cfg.compute_dtype,
                              name='unembed')

  def _logits(self, hidden: Array) -> Array:
    if self.cfg.tie_embeddings:
      return self.backbone.embed.attend(hidden).astype(jnp.float32)
    return per_token(self.unembed, hidden).astype(jnp.float32)

  def __call__(self, tokens: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    return self._logits(self.backbone(tokens, mask, deterministic=deterministic))

  def init_state(self, batch_size: int) -> State:
    return self.backbone.init_state(batch_size)

  def step(self, state: State, token_t: Array) -> tuple[State, Array]:
    """``token_t`` ``[batch]`` int -> (state, logits ``[batch, vocab]``)."""
    state, hidden = self.backbone.step(state, token_t)
    return state, self._logits(hidden)
