"""Multi-head self-attention with a KV-cache streaming mode.

The article's ``MultiHeadAttention`` (Vaswani et al. 2017, sec. 3.2.2)::

    head_h = Attention(x W_q^h, x W_k^h, x W_v^h)          (eq. 1, per head)
    MHA(x) = Concat(head_1, ..., head_H) W_o

implemented with four ``d_model -> d_model`` projections; head ``h`` owns features
``h*d_k : (h+1)*d_k`` of each projection (``d_k = d_model / num_heads``), the same split as
PyTorch's ``nn.MultiheadAttention``, so its weights load with ``mha_params_from_torch``.

Streaming (causal only) keeps a fixed-size KV cache ``[batch, max_len, heads, d_k]`` plus
the next write position; each step writes one key/value and attends over cache slots
``<= index``. Optional rotary embeddings (Su et al. 2021) rotate queries and keys by their
absolute position before the dot product.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.base import State, not_streamable
from seqjax.ops.attention import (ATTENTION, apply_attention_weights, attention_weights,
                                  auto_attention, fused_attention, make_attention_mask)
from seqjax.ops.chunked_attention import chunked_attention
from seqjax.ops.positions import apply_rope
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array


class MultiHeadAttention(nn.Module):
  """Multi-head scaled dot-product self-attention (a seqjax mixer).

  Attributes:
    d_model: model width (input and output).
    num_heads: number of heads; must divide ``d_model``.
    causal: mask future positions (decoder / language model); only causal attention
      streams.
    rope: apply rotary position embeddings to queries and keys.
    max_len: KV-cache length for streaming (required by ``init_state``); the parallel
      path accepts any length.
    dropout: dropout rate on the attention weights.
    use_bias: biases in the four projections.
    rope_base: RoPE base (10000 in RoFormer).
    attention_chunk: block size of the chunked implementation.
    impl: implementation switch (``seqjax.ops.switch``), site ``attention``:
      ``exact`` (materialises the ``[time, time]`` weights; what ``auto`` picks on CPU
      and TPU), ``chunked`` (online softmax over blocks, O(time) memory, same numbers) or
      ``cudnn`` (cuDNN's fused kernel, GPU only; ``auto`` picks it on GPU for 16-bit
      compute and head widths that are multiples of 8 up to 128, see
      ``ops.attention.auto_attention``; the padding mask is read as right padding).
      Neither ``chunked`` nor ``cudnn`` can return weights or apply weight dropout.
      Streaming ``step`` is exact either way.
    dtype: computation dtype; the softmax always runs in float32.

  Params: ``w_q``, ``w_k``, ``w_v``, ``w_o``, each a Dense with ``kernel``
  ``[d_model, d_model]`` (input-major) and ``bias`` ``[d_model]``.
  """

  d_model: int
  num_heads: int
  causal: bool = True
  rope: bool = False
  max_len: int | None = None
  dropout: float = 0.0
  use_bias: bool = True
  rope_base: float = 10000.0
  attention_chunk: int = 512
  impl: str = AUTO
  dtype: Any = jnp.float32

  switches: ClassVar[tuple[Switch, ...]] = (ATTENTION,)

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.num_heads <= 0 or self.d_model % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} must be positive and divide '
                       f'd_model={self.d_model}')
    if self.rope and self.head_dim % 2:
      raise ValueError(f'rope (positions=rope) needs an even head width, got d_model / '
                       f'num_heads = {self.head_dim}')
    if self.attention_chunk <= 0:
      raise ValueError(f'attention_chunk={self.attention_chunk} must be positive')
    ATTENTION.choice(self.impl)

  def setup(self):
    self.check()
    dense = lambda name: nn.Dense(self.d_model, use_bias=self.use_bias,
                                  dtype=self.dtype, name=name)
    self.w_q, self.w_k, self.w_v, self.w_o = (dense(n) for n in
                                              ('w_q', 'w_k', 'w_v', 'w_o'))
    self.attn_drop = nn.Dropout(self.dropout)

  @property
  def is_causal(self) -> bool:
    return self.causal

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  def _project(self, x: Array, positions: Array) -> tuple[Array, Array, Array]:
    """``x`` ``[batch, time, d_model]`` -> q, k, v each ``[batch, time, heads, d_k]``."""
    split = lambda y: y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)
    q, k, v = split(self.w_q(x)), split(self.w_k(x)), split(self.w_v(x))
    if self.rope:
      q = apply_rope(q, positions, self.rope_base)
      k = apply_rope(k, positions, self.rope_base)
    return q, k, v

  def _merge(self, out: Array) -> Array:
    """``[batch, heads, time, d_k]`` -> ``W_o`` applied to ``[batch, time, d_model]``."""
    out = jnp.swapaxes(out, 1, 2)
    return self.w_o(out.reshape(*out.shape[:2], self.d_model))

  def __call__(self, x: Array, mask: Array | None = None, *, deterministic: bool = True,
               return_weights: bool = False) -> Array | tuple[Array, Array]:
    """Parallel self-attention.

    Args:
      x: ``[batch, time, d_model]``.
      mask: ``[batch, time]`` bool, True = real token; padded keys get zero weight.
      deterministic: disables attention-weight dropout.
      return_weights: also return the (pre-dropout) weights.

    Returns:
      ``y`` ``[batch, time, d_model]``, or ``(y, weights)`` with float32 weights
      ``[batch, heads, time, time]``. The weights are also sown as
      ``intermediates/attention_weights`` (collect with ``mutable=['intermediates']``)
      on the exact path; the chunked path never forms them.
    """
    time = x.shape[1]
    choice = ATTENTION.choice(self.impl)
    if choice == AUTO:
      choice = auto_attention(
          jax.default_backend(), time, dtype=self.dtype, head_dim=self.head_dim,
          needs_weights=return_weights or (self.dropout > 0 and not deterministic))
    if choice == 'cudnn' and (return_weights or (self.dropout > 0 and not deterministic)):
      raise ValueError("return_weights / attention-weight dropout need "
                       "impl='attention:exact'; the fused cuDNN kernel never "
                       'materialises the weights')
    chunked = choice == 'chunked'
    if chunked and return_weights:
      raise ValueError("return_weights=True needs impl='attention:exact'; the chunked "
                       'path never materialises the attention weights')
    if chunked and self.dropout > 0 and not deterministic:
      raise ValueError(f'attention-weight dropout (dropout={self.dropout}, '
                       "deterministic=False) needs impl='attention:exact'; the chunked "
                       'path never materialises the weights (set dropout=0)')
    x = x.astype(self.dtype)
    q, k, v = self._project(x, jnp.arange(time, dtype=jnp.int32))
    if choice == 'cudnn':  # takes [batch, time, heads, d_k] as it is
      out = fused_attention(q, k, v, key_mask=mask, causal=self.causal)
      return self._merge(jnp.swapaxes(out, 1, 2).astype(self.dtype))
    # Heads move forward only here: RoPE and the cache work on [batch, time, heads, d_k].
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    if chunked:
      out = chunked_attention(q, k, v, key_mask=mask, causal=self.causal,
                              block_q=self.attention_chunk, block_k=self.attention_chunk)
      return self._merge(out.astype(self.dtype))
    attn_mask = make_attention_mask(mask, causal=self.causal, t_q=time)
    weights = attention_weights(q, k, attn_mask)
    self.sow('intermediates', 'attention_weights', weights)
    dropped = self.attn_drop(weights, deterministic=deterministic)
    y = self._merge(apply_attention_weights(dropped, v))
    return (y, weights) if return_weights else y

  def init_state(self, batch_size: int) -> State:
    """Empty KV cache: ``key``/``value`` ``[batch, max_len, heads, d_k]``, ``index`` 0."""
    if not self.causal:
      raise not_streamable('MultiHeadAttention(causal=False)')
    if self.max_len is None:
      raise ValueError('MultiHeadAttention streaming needs max_len (the KV-cache length); '
                       'got max_len=None')
    shape = (batch_size, self.max_len, self.num_heads, self.head_dim)
    return {'key': jnp.zeros(shape, self.dtype), 'value': jnp.zeros(shape, self.dtype),
            'index': jnp.zeros((), jnp.int32)}

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token ``x_t`` ``[batch, d_model]`` at position ``state['index']``.

    Writes this token's key/value into the cache, attends over slots ``0..index`` and
    returns ``(state with index + 1, y_t [batch, d_model])``. Past ``max_len`` tokens the
    write clamps to the last slot (a traced index cannot raise), so callers must keep
    sequences within ``max_len``.
    """
    if not self.causal:
      raise not_streamable('MultiHeadAttention(causal=False)')
    index = state['index']
    q, k, v = self._project(x_t.astype(self.dtype)[:, None], index[None])
    start = (0, index, 0, 0)
    key = jax.lax.dynamic_update_slice(state['key'], k.astype(state['key'].dtype), start)
    value = jax.lax.dynamic_update_slice(state['value'], v.astype(state['value'].dtype),
                                         start)
    attn_mask = make_attention_mask(None, causal=True, t_q=1, t_k=key.shape[1],
                                    offset=index)
    q, k_all, v_all = (jnp.swapaxes(a, 1, 2) for a in (q, key, value))
    weights = attention_weights(q, k_all, attn_mask)
    y = self._merge(apply_attention_weights(weights, v_all))[:, 0]
    return {'key': key, 'value': value, 'index': index + 1}, y


def mha_params_from_torch(weights: Mapping[str, Any], *, use_bias: bool = True) -> dict:
  """``nn.MultiheadAttention`` state-dict arrays -> ``MultiHeadAttention`` params.

  Args:
    weights: ``in_proj_weight`` ``[3D, D]`` (q, k, v stacked, PyTorch ``[out, in]``),
      ``in_proj_bias`` ``[3D]``, ``out_proj.weight`` ``[D, D]``, ``out_proj.bias``
      ``[D]``; the biases are not read when ``use_bias=False``.
    use_bias: whether the target module has biases.

  Returns:
    The value of the module's ``'params'`` collection: ``{'w_q': {'kernel', 'bias'}, ...}``
    as float32 NumPy arrays, kernels transposed to ``[in, out]``. Use as
    ``module.apply({'params': mha_params_from_torch(sd)}, x)``.
  """
  def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if name not in weights:
      raise ValueError(f'torch MultiheadAttention weights are missing {name!r}')
    arr = np.asarray(weights[name], np.float32)
    if shape is not None and arr.shape != shape:
      raise ValueError(f'torch weight {name!r} has shape {arr.shape}, expected {shape}')
    return arr

  w_in = get('in_proj_weight')
  if w_in.ndim != 2 or w_in.shape[0] != 3 * w_in.shape[1]:
    raise ValueError(f"torch weight 'in_proj_weight' has shape {w_in.shape}, expected "
                     '[3 * embed_dim, embed_dim]')
  d = w_in.shape[1]
  w_out = get('out_proj.weight', (d, d))
  params = {name: {'kernel': w.T.copy()} for name, w in
            zip(('w_q', 'w_k', 'w_v'), np.split(w_in, 3, axis=0))}
  params['w_o'] = {'kernel': w_out.T.copy()}
  if use_bias:
    b_in = get('in_proj_bias', (3 * d,))
    for name, b in zip(('w_q', 'w_k', 'w_v'), np.split(b_in, 3)):
      params[name]['bias'] = b
    params['w_o']['bias'] = get('out_proj.bias', (d,))
  return params
