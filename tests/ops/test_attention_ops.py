"""Properties of seqjax.ops.attention against a NumPy float64 reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.ops import attention as attn

RNG = np.random.default_rng(0)
B, H, TQ, TK, D, DV = 2, 3, 5, 7, 4, 6


def np_sdpa(q, k, v, mask=None):
  """softmax(QKᵀ/√d) V in float64; masked entries excluded, empty rows -> zeros."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  allowed = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(
      np.asarray(mask), scores.shape)
  weights = np.zeros_like(scores)
  for idx in np.ndindex(scores.shape[:-1]):
    row, ok = scores[idx], allowed[idx]
    if ok.any():
      e = np.exp(row[ok] - row[ok].max())
      weights[idx][ok] = e / e.sum()
  return weights @ v, weights


def _inputs(tq=TQ, tk=TK):
  q = RNG.standard_normal((B, H, tq, D)).astype(np.float32)
  k = RNG.standard_normal((B, H, tk, D)).astype(np.float32)
  v = RNG.standard_normal((B, H, tk, DV)).astype(np.float32)
  return q, k, v


sdpa = jax.jit(attn.scaled_dot_product_attention)


def test_sdpa_matches_numpy_without_mask():
  q, k, v = _inputs()
  out, w = sdpa(q, k, v)
  ref_out, ref_w = np_sdpa(q, k, v)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(w, ref_w, atol=1e-6)


def test_sdpa_matches_numpy_with_mask_exact_zeros_and_row_sums():
  q, k, v = _inputs()
  mask = RNG.random((B, 1, TQ, TK)) < 0.6
  mask[..., 0] = True  # every row keeps at least one key here
  out, w = sdpa(q, k, v, mask)
  ref_out, ref_w = np_sdpa(q, k, v, mask)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(w, ref_w, atol=1e-6)
  w = np.asarray(w)
  full_mask = np.broadcast_to(mask, w.shape)
  assert np.all(w[~full_mask] == 0.0)  # exactly zero, not exp(-1e9)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)


def test_fully_masked_row_gives_zeros_without_nan_in_values_and_grads():
  q, k, v = _inputs()
  mask = RNG.random((B, H, TQ, TK)) < 0.6
  mask[..., 0] = True
  mask[0, 1, 2, :] = False  # one query sees nothing
  mask[1, :, 4, :] = False  # ... and one query in every head

  def loss(q, k, v):
    out, w = attn.scaled_dot_product_attention(q, k, v, mask)
    return jnp.sum(out ** 2) + jnp.sum(w * jnp.arange(TK))

  out, w = sdpa(q, k, v, mask)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(w))
  assert np.all(np.asarray(w)[0, 1, 2] == 0) and np.all(np.asarray(out)[0, 1, 2] == 0)
  assert np.all(np.asarray(w)[1, :, 4] == 0) and np.all(np.asarray(out)[1, :, 4] == 0)
  ref_out, ref_w = np_sdpa(q, k, v, mask)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  np.testing.assert_allclose(w, ref_w, atol=1e-6)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for g in grads:
    assert np.all(np.isfinite(g))
  # A query that attends to nothing has no influence path at all.
  assert np.all(np.asarray(grads[0])[0, 1, 2] == 0)


def test_masked_softmax_gradient_matches_large_negative_fill():
  """Where no row is empty, gradients equal the article's masked_fill(-1e9) softmax."""
  q, k, v = _inputs()
  mask = RNG.random((B, 1, TQ, TK)) < 0.6
  mask[..., -1] = True

  def ours(q, k, v):
    return jnp.sum(jnp.sin(attn.scaled_dot_product_attention(q, k, v, mask)[0]))

  def article(q, k, v):
    s = jnp.einsum('bhqd,bhkd->bhqk', q, k) / np.sqrt(D)
    w = jax.nn.softmax(jnp.where(mask, s, -1e9), axis=-1)
    return jnp.sum(jnp.sin(jnp.einsum('bhqk,bhkd->bhqd', w, v)))

  g_ours = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(q, k, v)
  g_ref = jax.jit(jax.grad(article, argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bf16_inputs_softmax_in_float32():
  q, k, v = _inputs()
  out, w = sdpa(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)))
  assert w.dtype == jnp.float32 and out.dtype == jnp.bfloat16
  # Weights of bf16-rounded inputs match the float64 reference on those same inputs
  # to float32 accuracy: only the inputs were rounded, not the softmax.
  qb, kb, vb = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (q, k, v))
  _, ref_w = np_sdpa(qb, kb, vb)
  np.testing.assert_allclose(w, ref_w, atol=1e-6)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)


def test_causal_mask_with_offset_and_rectangular_shapes():
  for t_q, t_k, offset in [(4, None, 0), (3, 6, 0), (3, 6, 3), (1, 8, 5)]:
    m = np.asarray(attn.causal_mask(t_q, t_k, offset))
    t_k_ = t_q if t_k is None else t_k
    ref = np.array([[j <= offset + i for j in range(t_k_)] for i in range(t_q)])
    assert m.shape == (1, 1, t_q, t_k_)
    np.testing.assert_array_equal(m[0, 0], ref)
  # A traced offset (decoding index) gives the same mask.
  traced = jax.jit(lambda i: attn.causal_mask(1, 8, i))(jnp.int32(5))
  np.testing.assert_array_equal(traced, attn.causal_mask(1, 8, 5))


def test_padding_combine_and_make_attention_mask():
  tokens = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  pad = np.asarray(attn.padding_mask(tokens))
  assert pad.shape == (2, 1, 1, 4)
  np.testing.assert_array_equal(np.broadcast_to(pad, (2, 3, 4, 4))[:, 1, 2], tokens)
  assert attn.combine_masks(None, None) is None
  causal = attn.causal_mask(4)
  combined = np.asarray(attn.combine_masks(None, pad, causal))
  ref = tokens[:, None, None, :] & np.tril(np.ones((4, 4), bool))[None, None]
  np.testing.assert_array_equal(combined, ref)
  np.testing.assert_array_equal(
      attn.make_attention_mask(tokens, causal=True, t_q=4), ref)
  np.testing.assert_array_equal(
      attn.make_attention_mask(tokens, causal=False, t_q=4), pad)
  assert attn.make_attention_mask(None, causal=False, t_q=4) is None


def test_causal_masked_sdpa_equals_prefix_attention():
  """Row i of causal attention equals unmasked attention over keys 0..i."""
  q, k, v = _inputs(tq=TK)
  out, _ = sdpa(q, k, v, attn.causal_mask(TK))
  for i in range(TK):
    ref, _ = np_sdpa(q[:, :, i:i + 1], k[:, :, :i + 1], v[:, :, :i + 1])
    np.testing.assert_allclose(np.asarray(out)[:, :, i:i + 1], ref, atol=1e-5)


def test_auto_attention_rule_per_platform_dtype_and_shape():
  from seqjax.ops.attention import CPU_CHUNKED_FROM, auto_attention
  rule = lambda platform, dtype='bfloat16', head_dim=64, needs_weights=False, time=128: \
      auto_attention(platform, time, dtype=jnp.dtype(dtype), head_dim=head_dim,
                     needs_weights=needs_weights)
  assert rule('gpu') == rule('gpu', 'float16', 128) == 'cudnn'
  assert rule('gpu', 'float32') == 'exact'           # cuDNN's fused kernel is 16-bit
  assert rule('gpu', head_dim=12) == rule('gpu', head_dim=256) == 'exact'
  assert rule('gpu', needs_weights=True) == 'exact'  # weights / weight dropout asked for
  assert rule('cpu') == rule('tpu') == 'exact'
  # CPU: the chunked kernel from CPU_CHUNKED_FROM tokens on, unless weights are wanted.
  long = CPU_CHUNKED_FROM
  assert rule('cpu', 'float32', time=long) == rule('cpu', time=4 * long) == 'chunked'
  assert rule('cpu', time=long - 1) == rule('cpu', time=None) == 'exact'
  assert rule('cpu', time=long, needs_weights=True) == rule('tpu', time=long) == 'exact'


@pytest.mark.parametrize('causal', [True, False])
def test_fused_attention_call_matches_exact(causal):
  """The cuDNN call's plumbing (layout, right-padding lengths, causality), run with
  ``implementation='xla'`` since no GPU is here, equals the exact path."""
  from seqjax.ops.attention import attend, fused_attention
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 7, 8)), jnp.float32) for _ in range(3))
  key_mask = jnp.asarray(np.arange(7)[None] < np.array([[7], [4]]))
  want = attend(q, k, v, key_mask=key_mask, causal=causal, impl='exact')
  swap = lambda a: jnp.swapaxes(a, 1, 2)
  got = swap(fused_attention(swap(q), swap(k), swap(v), key_mask=key_mask, causal=causal,
                             implementation='xla'))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
