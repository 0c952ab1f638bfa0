"""The Transformer block: a pre-LayerNorm residual block around multi-head attention.

Vaswani et al. 2017, sec. 3.1, in the pre-norm arrangement (Xiong et al. 2020)::

    x = x + Dropout(MHA(LayerNorm(x)))
    x = x + Dropout(MLP(LayerNorm(x)))

This is ``seqjax.layers.block.ResidualBlock`` with ``MultiHeadAttention`` as the mixer, so
a Transformer differs from the other families in the comparison backbone only by its mixer.
Parallel and streaming modes (KV cache) come from the two modules.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from seqjax.layers.attention import MultiHeadAttention
from seqjax.layers.block import ResidualBlock


def TransformerBlock(  # pylint: disable=invalid-name  (reads like the module it builds)
    d_model: int,
    num_heads: int,
    *,
    mlp_hidden: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    causal: bool = True,
    rope: bool = False,
    max_len: int | None = None,
    rope_base: float = 10000.0,
    norm: str = 'layernorm',
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> ResidualBlock:
  """Builds a pre-norm Transformer block (an unbound ``ResidualBlock``).

  Args:
    d_model: residual width; input/output ``[batch, time, d_model]``.
    num_heads: attention heads (must divide ``d_model``).
    mlp_hidden: MLP inner width; ``None`` means ``4 * d_model`` (Vaswani et al. 2017).
    dropout: residual dropout on both branches.
    attention_dropout: dropout on the attention weights.
    causal, rope, max_len, rope_base: forwarded to ``MultiHeadAttention`` (``max_len`` is
      the KV-cache length needed for streaming).
    norm: ``'layernorm'`` or ``'rmsnorm'``.
    dtype: computation dtype.
    name: optional module name.

  Returns:
    A ``ResidualBlock`` whose child ``mixer`` is the attention layer; it has the mixer
    interface (``__call__``, ``init_state``, ``step``, ``is_causal``).
  """
  mixer = MultiHeadAttention(d_model, num_heads, causal=causal, rope=rope,
                             max_len=max_len, dropout=attention_dropout,
                             rope_base=rope_base, dtype=dtype, parent=None)
  return ResidualBlock(mixer=mixer, d_model=d_model,
                       mlp_hidden=4 * d_model if mlp_hidden is None else mlp_hidden,
                       dropout=dropout, norm=norm, dtype=dtype, name=name)
