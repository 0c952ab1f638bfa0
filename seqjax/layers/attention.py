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

Two options serve Griffin's local multi-query attention (De et al. 2024, sec. 2.3) and any
Transformer: ``attention_window = W > 0`` lets query ``i`` see only keys ``i - W < j``
(sliding-window attention in ``O(T W)`` memory: by the chunked kernel, whose loops visit
only the blocks that overlap the window, when the ``attention`` site is ``chunked``, else
block by block with exact weights in ``seqjax.ops.local_attention``), and its KV cache
becomes a ring buffer of ``W`` slots (slot
``index mod W``), so decoding runs in constant memory for any stream length; keys are
rotated by their absolute position before they are stored, so the slots' order does not
matter. ``num_kv_heads`` < ``num_heads`` shares each key/value head among
``num_heads / num_kv_heads`` query heads (multi-query attention, Shazeer 2019, at 1;
grouped-query in between).
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
from seqjax.ops.local_attention import local_attention
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
    attention_window: ``W > 0``: sliding-window attention over the last ``W`` positions
      (module doc): the chunked kernel with the window when the ``attention`` site is
      ``chunked``; otherwise, when ``W < time``, ``local_attention``'s exact blocks, and
      the global path when the window hides nothing; 0 attends globally.
    num_kv_heads: key/value heads (0 = ``num_heads``); divides ``num_heads``.
    impl: implementation switch (``seqjax.ops.switch``), site ``attention``:
      ``exact`` (materialises the ``[time, time]`` weights; what ``auto`` picks on TPU
      and on CPU below 1024 tokens), ``chunked`` (online softmax over blocks, O(time)
      memory, same numbers; ``auto`` on CPU from 1024 tokens) or
      ``cudnn`` (cuDNN's fused kernel, GPU only; ``auto`` picks it on GPU for 16-bit
      compute and head widths that are multiples of 8 up to 128, see
      ``ops.attention.auto_attention``; the padding mask is read as right padding).
      Neither ``chunked`` nor ``cudnn`` can return weights or apply weight dropout.
      Streaming ``step`` is exact either way.
    dtype: computation dtype; the softmax always runs in float32.

  Params: ``w_q``, ``w_k``, ``w_v``, ``w_o``, each a Dense with ``kernel``
  ``[d_model, d_model]`` (input-major) and ``bias`` ``[d_model]``; with ``num_kv_heads``
  the ``w_k`` and ``w_v`` outputs are ``num_kv_heads * d_k`` wide.
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
  attention_window: int = 0
  num_kv_heads: int = 0
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
    if self.attention_window < 0:
      raise ValueError(f'attention_window={self.attention_window} must be >= 0 (0: global)')
    if self.num_kv_heads < 0 or self.num_heads % (self.num_kv_heads or self.num_heads):
      raise ValueError(f'num_kv_heads={self.num_kv_heads} must divide num_heads='
                       f'{self.num_heads}')
    ATTENTION.choice(self.impl)

  def setup(self):
    self.check()
    dense = lambda name, width: nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype,
                                         name=name)
    kv = self.kv_heads * self.head_dim
    self.w_q, self.w_k, self.w_v, self.w_o = (dense(n, w) for n, w in (
        ('w_q', self.d_model), ('w_k', kv), ('w_v', kv), ('w_o', self.d_model)))
    self.attn_drop = nn.Dropout(self.dropout)

  @property
  def is_causal(self) -> bool:
    return self.causal

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  def _share_kv(self, a: Array) -> Array:
    """``[batch, time, kv_heads, d_k]`` -> ``[batch, time, heads, d_k]`` (query heads
    ``h`` read key/value head ``h // (heads / kv_heads)``)."""
    return jnp.repeat(a, self.num_heads // self.kv_heads, axis=2)

  def _project(self, x: Array, positions: Array) -> tuple[Array, Array, Array]:
    """``x`` ``[batch, time, d_model]`` -> q ``[batch, time, heads, d_k]``, k, v
    ``[batch, time, kv_heads, d_k]``."""
    split = lambda y: y.reshape(*y.shape[:-1], -1, self.head_dim)
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
    k, v = self._share_kv(k), self._share_kv(v)
    windowed = bool(self.attention_window) and self.attention_window < time
    if choice == 'cudnn' and not windowed:  # takes [batch, time, heads, d_k] as it is
      out = fused_attention(q, k, v, key_mask=mask, causal=self.causal)
      return self._merge(jnp.swapaxes(out, 1, 2).astype(self.dtype))
    # Heads move forward only here: RoPE and the cache work on [batch, time, heads, d_k].
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    # A window as long as the sequence hides nothing: the global path (either choice of
    # the attention site) is then the same function, and cheaper than blocks of 2 W keys.
    if windowed and not chunked:
      if return_weights or (self.dropout > 0 and not deterministic):
        raise ValueError(f'attention_window={self.attention_window} computes attention by '
                         'blocks: no return_weights, no attention-weight dropout')
      out = local_attention(q, k, v, window=self.attention_window, key_mask=mask,
                            causal=self.causal)
      return self._merge(out)
    if chunked:
      out = chunked_attention(q, k, v, key_mask=mask, causal=self.causal,
                              block_q=self.attention_chunk, block_k=self.attention_chunk,
                              window=self.attention_window)
      return self._merge(out.astype(self.dtype))
    attn_mask = make_attention_mask(mask, causal=self.causal, t_q=time)
    weights = attention_weights(q, k, attn_mask)
    self.sow('intermediates', 'attention_weights', weights)
    dropped = self.attn_drop(weights, deterministic=deterministic)
    y = self._merge(apply_attention_weights(dropped, v))
    return (y, weights) if return_weights else y

  def init_state(self, batch_size: int) -> State:
    """Empty KV cache: ``key``/``value`` ``[batch, slots, kv_heads, d_k]`` with ``slots =
    attention_window`` (a ring buffer) or ``max_len``; ``index`` 0."""
    if not self.causal:
      raise not_streamable('MultiHeadAttention(causal=False)')
    if self.max_len is None and not self.attention_window:
      raise ValueError('MultiHeadAttention streaming needs max_len (the KV-cache length); '
                       'got max_len=None')
    shape = (batch_size, self.attention_window or self.max_len, self.kv_heads,
             self.head_dim)
    return {'key': jnp.zeros(shape, self.dtype), 'value': jnp.zeros(shape, self.dtype),
            'index': jnp.zeros((), jnp.int32)}

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token ``x_t`` ``[batch, d_model]`` at position ``state['index']``.

    Writes this token's key/value into the cache, attends over slots ``0..index`` and
    returns ``(state with index + 1, y_t [batch, d_model])``. Past ``max_len`` tokens the
    write clamps to the last slot (a traced index cannot raise), so callers must keep
    sequences within ``max_len``. With ``attention_window`` the write goes to slot
    ``index mod W``, over the key that just left the window, and any length streams.
    """
    if not self.causal:
      raise not_streamable('MultiHeadAttention(causal=False)')
    index = state['index']
    q, k, v = self._project(x_t.astype(self.dtype)[:, None], index[None])
    slot = index % self.attention_window if self.attention_window else index
    start = (0, slot, 0, 0)
    key = jax.lax.dynamic_update_slice(state['key'], k.astype(state['key'].dtype), start)
    value = jax.lax.dynamic_update_slice(state['value'], v.astype(state['value'].dtype),
                                         start)
    # Ring or not, the filled slots are 0..min(index, slots - 1), all within the window.
    attn_mask = make_attention_mask(None, causal=True, t_q=1, t_k=key.shape[1],
                                    offset=index)
    q, k_all, v_all = (jnp.swapaxes(a, 1, 2) for a in (q, self._share_kv(key),
                                                        self._share_kv(value)))
    weights = attention_weights(q, k_all, attn_mask)
    y = self._merge(apply_attention_weights(weights, v_all))[:, 0]
    return {'key': key, 'value': value, 'index': index + 1}, y


def mha_params_from_torch(weights: Mapping[str, Any], *, use_bias: bool = True) -> dict:
  """``nn.MultiheadAttention`` state-dict arrays -> ``MultiHeadAttention`` params.

  Args:
    weights: ``in_proj_weight`` ``[3D, D]`` (q, k, v stacked, PyTorch ``[out, in]``),
      ``in_proj_bias`` ``[3D]``, ``out_proj.weight`` ``[D, D]``, ``out_proj.bias``
      ``[D]``; with ``use_bias=False`` the biases must be absent. Any other key
      (``bias_k``, ``bias_v``, ``q_proj_weight`` ...) is refused: it has no counterpart.
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

  known = {'in_proj_weight', 'out_proj.weight'} | (
      {'in_proj_bias', 'out_proj.bias'} if use_bias else set())
  unknown = sorted(set(weights) - known)
  if unknown:
    # bias_k / bias_v (add_bias_kv=True) or separate q/k/v weights (kdim/vdim) change the
    # function; dropping them silently would load a different model.
    raise ValueError(f'torch MultiheadAttention weights {unknown} have no counterpart in '
                     'MultiHeadAttention (supported: add_bias_kv=False, kdim = vdim = '
                     f'embed_dim, bias={use_bias}); remove them or convert by hand')
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
