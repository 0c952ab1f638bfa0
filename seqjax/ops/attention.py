"""Scaled dot-product attention and attention masks, as pure functions.

Attention (Vaswani et al. 2017, eq. 1)::

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

over ``q`` ``[batch, heads, t_q, d_k]``, ``k`` ``[batch, heads, t_k, d_k]`` and ``v``
``[batch, heads, t_k, d_v]``. Masks are bool, broadcastable to ``[batch, heads, t_q, t_k]``,
``True`` where a query may attend to a key.

Masking differs from the usual ``scores.masked_fill(mask == 0, -1e9)``: a masked position
gets *exactly* zero weight (not ``exp(-1e9)``), and a query whose every key is masked gets
all-zero weights and a zero output instead of a uniform average over padding (or ``NaN``
with ``-inf`` fills), in values and in gradients.

The exact implementation materialises the ``[t_q, t_k]`` weight matrix (O(T²) memory, the
article's comparison table). The memory-efficient chunked variant (online softmax over
blocks, Rabe & Staats 2021) lives in ``seqjax.ops.chunked_attention``; ``attend`` picks
either behind one ``(q, k, v, key_mask, causal) -> output`` contract, and :data:`ATTENTION`
is the implementation switch (site ``attention``, see ``seqjax.ops.switch``). The chunked
path cannot return the weight matrix, which is why ``attention_weights`` is a separate
function.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seqjax.ops.chunked_attention import chunked_attention
from seqjax.ops.switch import Switch

Array = jax.Array

# Implementations ``attend`` dispatches to.
ATTENTION_IMPLS = ('exact', 'chunked', 'cudnn')
CUDNN_DTYPES = ('bfloat16', 'float16')


# From this length on, ``auto`` runs chunked attention on CPU: a causal Transformer block's
# train step then took 0.55-0.72 of the exact path's time (B x d_model = 1 x 256, 8 x 128,
# 32 x 64; 512-blocks; 2026-12-02), while below it the two were within 0.89-1.24 of each
# other (BENCHMARKS.md, "Design measurements: auto attention on CPU").
CPU_CHUNKED_FROM = 1024


def _attention_rule(platform: str, time: int | None) -> str:
  """``auto``: ``'cudnn'`` (fused attention) on GPU, the chunked kernel on CPU from
  ``CPU_CHUNKED_FROM`` tokens, ``'exact'`` otherwise (shorter CPU inputs, TPU, and an
  unknown length). On GPU the layer falls back to ``'exact'`` where cuDNN cannot run, and
  anywhere to ``'exact'`` where the weights or attention-weight dropout are asked for
  (``auto_attention``); the sown weights exist on the exact path only, so a caller that
  reads them (the interpretability experiment) names ``attention:exact``."""
  if platform == 'gpu':
    return 'cudnn'
  if platform == 'cpu' and time is not None and time >= CPU_CHUNKED_FROM:
    return 'chunked'
  return 'exact'


def auto_attention(platform: str, time: int | None, *, dtype, head_dim: int,
                   needs_weights: bool) -> str:
  """What ``auto`` runs for one call: ``_attention_rule``, except that ``'exact'`` (XLA)
  runs wherever the weights or attention-weight dropout are wanted (``needs_weights``),
  and cuDNN's fused kernel only where it can run: a 16-bit compute dtype and a head width
  that is a multiple of 8 up to 128."""
  choice = _attention_rule(platform, time)
  if needs_weights and choice != 'exact':
    return 'exact'
  if choice == 'cudnn' and (jnp.dtype(dtype).name not in CUDNN_DTYPES
                            or head_dim % 8 or head_dim > 128):
    return 'exact'
  return choice


def fused_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None,
                    causal: bool = False, implementation: str = 'cudnn') -> Array:
  """``jax.nn.dot_product_attention`` over ``[batch, time, heads, d_k]`` inputs (note the
  layout: heads third), returning ``[batch, t_q, heads, d_v]``.

  ``key_mask`` ``[batch, t_k]`` is read as right padding: its row sums become
  ``key_value_seq_lengths`` (what the fused kernel takes), which matches the pipeline's
  batches; a mask with holes needs ``'exact'``. ``implementation='xla'`` runs the same
  call anywhere (the tests check it against ``'exact'`` on CPU).
  """
  lengths = None
  if key_mask is not None:
    lengths = jnp.sum(key_mask, axis=-1, dtype=jnp.int32)
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                      key_value_seq_lengths=lengths,
                                      implementation=implementation)


ATTENTION = Switch('attention', ATTENTION_IMPLS, _attention_rule,
                   'softmax attention: exact [T, T] weights, online softmax over blocks '
                   '(O(T) memory) or cuDNN fused (GPU, 16-bit); ops/attention.py')


def attention_logits(q: Array, k: Array) -> Array:
  """Scaled scores ``Q Kᵀ / √d_k``: ``[batch, heads, t_q, t_k]`` in float32.

  Accumulating in float32 keeps bf16 inputs from losing the small score differences the
  softmax amplifies.
  """
  scores = jnp.einsum('bhqd,bhkd->bhqk', q, k,
                      preferred_element_type=jnp.float32)
  return scores.astype(jnp.float32) / math.sqrt(q.shape[-1])


def masked_softmax(scores: Array, mask: Array | None = None, axis: int = -1) -> Array:
  """Softmax over ``axis`` in float32 where ``mask == False`` entries get weight 0.

  Args:
    scores: logits of any shape (cast to float32).
    mask: bool, broadcastable to ``scores``; ``True`` = allowed. ``None`` allows all.
    axis: the axis normalised over.

  Returns:
    float32 weights of ``scores``' shape. Allowed entries of a row sum to 1; masked
    entries are exactly 0; a row with no allowed entry is all 0 (finite gradients too).
  """
  scores = scores.astype(jnp.float32)
  if mask is None:
    return jax.nn.softmax(scores, axis=axis)
  mask = jnp.broadcast_to(mask, scores.shape)
  # A finite fill (not -inf) keeps `scores - max` finite on fully masked rows, so neither
  # the forward pass nor its gradient ever sees inf - inf.
  filled = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  shifted = filled - jax.lax.stop_gradient(jnp.max(filled, axis=axis, keepdims=True))
  unnorm = jnp.where(mask, jnp.exp(shifted), 0.0)
  denom = jnp.sum(unnorm, axis=axis, keepdims=True)
  return unnorm / jnp.where(denom > 0, denom, 1.0)


def attention_weights(q: Array, k: Array, mask: Array | None = None) -> Array:
  """``softmax(Q Kᵀ / √d_k)`` with masking: float32 ``[batch, heads, t_q, t_k]``."""
  return masked_softmax(attention_logits(q, k), mask, axis=-1)


def apply_attention_weights(weights: Array, v: Array) -> Array:
  """``weights`` ``[batch, heads, t_q, t_k]`` times ``v`` ``[batch, heads, t_k, d_v]``.

  Returns ``[batch, heads, t_q, d_v]`` in ``v``'s dtype (accumulated in float32).
  """
  out = jnp.einsum('bhqk,bhkd->bhqd', weights.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.astype(v.dtype)


def scaled_dot_product_attention(q: Array, k: Array, v: Array,
                                 mask: Array | None = None) -> tuple[Array, Array]:
  """Exact attention ``softmax(Q Kᵀ / √d_k) V`` (Vaswani et al. 2017, eq. 1).

  Args:
    q: ``[batch, heads, t_q, d_k]`` queries.
    k: ``[batch, heads, t_k, d_k]`` keys.
    v: ``[batch, heads, t_k, d_v]`` values.
    mask: bool broadcastable to ``[batch, heads, t_q, t_k]``, ``True`` = may attend.

  Returns:
    ``(output, weights)``: ``output`` ``[batch, heads, t_q, d_v]`` in ``v``'s dtype;
    ``weights`` float32 ``[batch, heads, t_q, t_k]`` (see ``masked_softmax`` for the
    masked-row behaviour).
  """
  weights = attention_weights(q, k, mask)
  return apply_attention_weights(weights, v), weights


def attend(q: Array, k: Array, v: Array, *, key_mask: Array | None = None,
           causal: bool = False, impl: str = 'exact', chunk_size: int = 512) -> Array:
  """Masked attention output by the chosen implementation (same numbers either way).

  Args:
    q, k, v: ``[batch, heads, t_q, d_k]``, ``[batch, heads, t_k, d_k]``,
      ``[batch, heads, t_k, d_v]``.
    key_mask: ``[batch, t_k]`` bool, True = real key; ``None`` = all real.
    causal: query ``i`` sees keys ``j <= i``.
    impl: ``'exact'`` materialises the ``[t_q, t_k]`` weights (O(T²) memory);
      ``'chunked'`` uses online softmax over ``chunk_size`` blocks (O(T) memory);
      ``'cudnn'`` is cuDNN's fused kernel (GPU only; ``fused_attention``).
    chunk_size: query and key block size of the chunked path.

  Returns:
    ``[batch, heads, t_q, d_v]`` in ``v``'s dtype.
  """
  if impl == 'exact':
    mask = make_attention_mask(key_mask, causal=causal, t_q=q.shape[2], t_k=k.shape[2])
    return apply_attention_weights(attention_weights(q, k, mask), v)
  if impl == 'chunked':
    return chunked_attention(q, k, v, key_mask=key_mask, causal=causal,
                             block_q=chunk_size, block_k=chunk_size)
  if impl == 'cudnn':
    swap = lambda a: jnp.swapaxes(a, 1, 2)
    return swap(fused_attention(swap(q), swap(k), swap(v), key_mask=key_mask,
                                causal=causal))
  raise ValueError(f'attention impl={impl!r} is not valid; choose one of '
                   f'{list(ATTENTION_IMPLS)}')


# ----------------------------------------------------------------------------- masks


def causal_mask(t_q: int, t_k: int | None = None, offset: int | Array = 0) -> Array:
  """Causal mask ``[1, 1, t_q, t_k]``: query ``i`` may see key ``j`` iff ``j <= offset+i``.

  Queries sit at absolute positions ``offset .. offset + t_q - 1`` and keys at
  ``0 .. t_k - 1``. ``offset`` may be a traced int32 scalar: a single decoding query at
  position ``index`` over a fixed-size KV cache is ``causal_mask(1, max_len, index)``.
  """
  t_k = t_q if t_k is None else t_k
  q_pos = offset + jnp.arange(t_q, dtype=jnp.int32)[:, None]
  k_pos = jnp.arange(t_k, dtype=jnp.int32)[None, :]
  return (k_pos <= q_pos)[None, None]


def padding_mask(mask: Array) -> Array:
  """Key-padding mask ``[batch, 1, 1, time]`` from a ``[batch, time]`` token mask.

  Every query (every head) may attend exactly to the real keys.
  """
  return mask.astype(bool)[:, None, None, :]


def combine_masks(*masks: Array | None) -> Array | None:
  """Logical AND of broadcast-compatible bool masks, skipping ``None``; ``None`` if none."""
  present = [m.astype(bool) for m in masks if m is not None]
  if not present:
    return None
  out = present[0]
  for m in present[1:]:
    out = jnp.logical_and(out, m)
  return out


def make_attention_mask(key_mask: Array | None, *, causal: bool, t_q: int,
                        t_k: int | None = None, offset: int | Array = 0) -> Array | None:
  """The self-attention mask used by multi-head attention.

  Args:
    key_mask: ``[batch, t_k]`` bool token mask (True = real key) or ``None``.
    causal: also forbid attending to later positions (``causal_mask``).
    t_q, t_k, offset: as in ``causal_mask``; ``t_k`` defaults to ``t_q``.

  Returns:
    bool mask broadcastable to ``[batch, heads, t_q, t_k]``, or ``None`` if nothing is
    masked.
  """
  return combine_masks(
      None if key_mask is None else padding_mask(key_mask),
      causal_mask(t_q, t_k, offset) if causal else None)
