"""Additive (Bahdanau) attention for encoder-decoder models.

Bahdanau, Cho & Bengio 2015, eq. 6 (the article's ``attention(decoder_hidden,
encoder_outputs)``)::

    e_s = vᵀ tanh(W_q q + W_k k_s + b)       score of source position s
    w   = softmax_s(e)                        padded positions get exactly 0
    c   = Σ_s w_s k_s                         context vector

The ``W_k k_s + b`` term does not depend on the decoder step, so ``project_keys`` computes
it once per source sequence and the decoder passes it back in at every step. The article's
two ``nn.Linear`` biases collapse into the single ``b`` (their sum is all that matters) and
``linear_v``'s bias is dropped (softmax ignores a constant shift).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.ops.attention import masked_softmax

Array = jax.Array


class BahdanauAttention(nn.Module):
  """Additive attention of one decoder query over encoder outputs.

  Attributes:
    query_dim: width of the decoder state ``q``.
    key_dim: width of the encoder outputs ``k_s`` (and of the context).
    attn_dim: width of the hidden alignment layer.
    dtype: computation dtype; the softmax runs in float32.

  Params (created in ``setup``, so any method initialises all of them): ``w_query``
  ``[query_dim, attn_dim]``, ``w_key`` ``[key_dim, attn_dim]``, ``bias`` ``[attn_dim]``,
  ``v`` ``[attn_dim]``.
  """

  query_dim: int
  key_dim: int
  attn_dim: int
  dtype: Any = jnp.float32

  def setup(self):
    init = nn.initializers.lecun_normal()
    self.w_query = self.param('w_query', init, (self.query_dim, self.attn_dim))
    self.w_key = self.param('w_key', init, (self.key_dim, self.attn_dim))
    self.bias = self.param('bias', nn.initializers.zeros, (self.attn_dim,))
    self.v = self.param('v', nn.initializers.normal(stddev=self.attn_dim ** -0.5),
                        (self.attn_dim,))

  def project_keys(self, keys: Array) -> Array:
    """``W_k k_s + b``: ``keys`` ``[batch, src, key_dim]`` -> ``[batch, src, attn_dim]``."""
    if keys.shape[-1] != self.key_dim:
      raise ValueError(f'keys have width {keys.shape[-1]}, expected key_dim={self.key_dim}')
    keys = keys.astype(self.dtype)
    return keys @ self.w_key.astype(self.dtype) + self.bias.astype(self.dtype)

  def __call__(self, query: Array, keys: Array, mask: Array | None = None,
               projected_keys: Array | None = None) -> tuple[Array, Array]:
    """Attend from one decoder state over the source.

    Args:
      query: ``[batch, query_dim]`` decoder state.
      keys: ``[batch, src, key_dim]`` encoder outputs.
      mask: ``[batch, src]`` bool, True = real source token; ``None`` = all real.
      projected_keys: ``project_keys(keys)`` if already computed (e.g. hoisted out of the
        decoder's scan); computed here otherwise.

    Returns:
      ``(context [batch, key_dim], weights [batch, src])``; weights are float32, sum to 1
      over real positions and are exactly 0 on padding (all 0 if a row has no real token).
    """
    if query.shape[-1] != self.query_dim:
      raise ValueError(f'query has width {query.shape[-1]}, expected '
                       f'query_dim={self.query_dim}')
    if projected_keys is None:
      projected_keys = self.project_keys(keys)
    q = query.astype(self.dtype) @ self.w_query.astype(self.dtype)  # [batch, attn_dim]
    hidden = jnp.tanh(projected_keys + q[:, None, :])
    scores = hidden @ self.v.astype(self.dtype)  # [batch, src]
    weights = masked_softmax(scores, mask, axis=-1)
    context = jnp.einsum('bs,bsk->bk', weights.astype(self.dtype), keys.astype(self.dtype),
                         preferred_element_type=jnp.float32)
    return context.astype(self.dtype), weights
