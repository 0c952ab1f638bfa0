"""The mixer contract of ``seqjax.layers.base``, checked for every registered family.

Every family in ``seqjax.models.families.FAMILIES`` that builds a mixer runs here, in each
causal setting it supports, in float32 and bfloat16 (a streaming family's both-ways form,
the generic wrapper, in float32), with and without a padding mask; a new
family is covered by being registered. The mixer is built from ``ModelConfig`` defaults
(tiny shapes: batch 2, 5 tokens, width 8), so the family's default implementation is the
one checked; each family's own tests compare its other implementations with it.

* streaming equals parallel (causal mixers) — token by token from ``init_state``;
* padding never reaches a real output: with garbage in the padded positions, every real
  position equals the sequence run alone, and (float32) no real output has a gradient
  with respect to a padded input (for a bidirectional LSTM: the backward pass starts at
  each row's last real token, its state never advanced by padding);
* causality by gradient: no output depends on a later input (causal mixers), and a
  non-causal mixer does depend on later inputs (its ``is_causal == False`` is true;
  float32, since dependence does not change with the dtype);
* the traced training program does not grow with the sequence length (no Python loop
  over time; float32);
* ``init_state`` gives a pytree of batch-leading arrays that ``step`` keeps in structure,
  shape and dtype; a non-causal mixer refuses to stream.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES

B, T, D = 2, 5, 8
LENGTHS = np.array([T, 3])  # row 1 is right-padded


def _cases():
  """Every family with a mixer, in each causal setting, once per distinct layer-0 mixer: a
  family that alternates block kinds (xlstm, griffin) builds the same layer 0 as the
  family of that kind, which adds no coverage and would only cost compile time."""
  cases, seen = [], []
  for name, family in FAMILIES.items():
    if family.build is None:
      continue
    for causal in family.causal:
      cfg = ModelConfig(model=name, head='classifier', causal=causal, d_model=D,
                        num_heads=2, max_len=16)
      mixer = family.build(cfg, causal, 0)
      if mixer not in seen:
        seen.append(mixer)
        cases.append(pytest.param(name, causal,
                                  id=f'{name}-{"causal" if causal else "bidirectional"}'))
  return cases


CASES = _cases()
DTYPES = ['float32', 'bfloat16']
# Every case in both dtypes, except the both-ways form of a streaming family: that is the
# generic Bidirectional wrapper around the causal mixer, which adds no dtype-specific code
# (the mixer's bfloat16 path is its causal case's), so it runs in float32 only.
CASES_DT = [pytest.param(*case.values, dtype, id=f'{case.id}-{dtype}')
            for case in CASES for dtype in DTYPES
            if case.values[1] or dtype == 'float32' or not FAMILIES[case.values[0]].streams]
CAUSAL_CASES_DT = [case for case in CASES_DT if case.values[1]]
# Which output depends on which input is a property of the mixer's graph, not of its
# dtype: bfloat16 rounds the values but cannot add or remove a path from an input to an
# output. The Jacobian is the most expensive part of a case's program, so the dependence
# check reads float32 only; bfloat16 keeps its value checks (streaming, padding).
CASES_F32 = [case for case in CASES_DT if case.values[2] == 'float32']
MASKED = [pytest.param(False, id='unmasked'), pytest.param(True, id='masked')]
# Agreement of two ways of computing the same outputs, relative to the outputs' scale (they
# are O(1)): 1e-5 in float32 (the contract); in bfloat16 both round every projection to 8
# mantissa bits.
TOL = {'float32': 1e-5, 'bfloat16': 4e-2}


def assert_close(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
  scale = max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


def _mixer(name: str, causal: bool, dtype: str):
  cfg = ModelConfig(model=name, head='classifier', causal=causal, d_model=D, num_heads=2,
                    max_len=16, dtype=dtype)
  return FAMILIES[name].build(cfg, causal)


@functools.lru_cache(maxsize=None)
def _setup(name: str, causal: bool, dtype: str):
  """The mixer; params in its init layout filled with NumPy noise (no compile; the
  contract holds for any parameters); inputs ``x`` ``[B, T, D]`` and ``x_pad`` (``x`` with
  garbage of magnitude 100 after each row's length)."""
  mixer = _mixer(name, causal, dtype)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  mask = jnp.asarray(np.arange(T)[None] < LENGTHS[:, None])
  x_pad = jnp.where(mask[..., None], x, 100.0 * jnp.asarray(rng.normal(size=(B, T, D)),
                                                           jnp.float32))
  shapes = jax.eval_shape(mixer.init, jax.random.key(0), x)
  # Weights ~ N(0, 1/fan_in) keep every output O(1), as an initialiser would.
  params = jax.tree.map(lambda s: jnp.asarray(
      rng.normal(size=s.shape) / np.sqrt(s.shape[0] if len(s.shape) > 1 else 4), s.dtype),
                        shapes)
  return mixer, params, x, x_pad, mask


@functools.lru_cache(maxsize=None)
def _outputs(name: str, causal: bool, dtype: str):
  """Everything the checks read, from one compiled program per family and dtype, for
  ``masked`` False (inputs ``x``, no mask) and True (``x_pad`` with its mask): the parallel
  output, the output with an all-True mask, the streamed output (causal only), the
  Jacobian ``[B, T, D, B, T, D]`` of the parallel output with respect to its input (at
  ``x``, with the mask when masked; float32 only), and row 1 run alone without its
  padding."""
  mixer, params, x, x_pad, mask = _setup(name, causal, dtype)
  parallel = lambda x, m: mixer.apply(params, x, m).astype(jnp.float32)

  def one(inputs, m, clean):
    # The Jacobian is taken at the clean inputs: garbage of magnitude 100 saturates the
    # gates of a recurrent cell, which would hide a leak behind vanishing gradients.
    out = {'parallel': parallel(inputs, m),
           'all_real': parallel(inputs, jnp.ones((B, T), bool))}
    if dtype == 'float32':  # see CASES_F32
      out['jacobian'] = jax.jacrev(lambda v: parallel(v, m))(clean)
    if causal:
      state = mixer.apply(params, B, method='init_state')
      step = lambda s, x_t: mixer.apply(params, s, x_t, method='step')
      _, ys = jax.lax.scan(step, state, jnp.swapaxes(inputs, 0, 1))
      out['stream'] = jnp.swapaxes(ys, 0, 1).astype(jnp.float32)
    return out

  @jax.jit
  def run(x, x_pad, mask):
    return {'unmasked': one(x, None, x), 'masked': one(x_pad, mask, x),
            'alone': parallel(x[1:, :LENGTHS[1]], None)[0]}

  return jax.tree.map(np.asarray, run(x, x_pad, mask))


def _real(masked: bool) -> np.ndarray:
  """``[B, T]`` True where the output is compared (every position when unmasked)."""
  return np.arange(T)[None] < (LENGTHS[:, None] if masked else np.full((B, 1), T))


@pytest.mark.parametrize('masked', MASKED)
@pytest.mark.parametrize('name, causal, dtype', CAUSAL_CASES_DT)
def test_streaming_equals_parallel(name, causal, dtype, masked):
  out = _outputs(name, causal, dtype)['masked' if masked else 'unmasked']
  real = _real(masked)
  assert_close(out['stream'][real], out['parallel'][real], dtype)


@pytest.mark.parametrize('masked', MASKED)
@pytest.mark.parametrize('name, causal, dtype', CASES_DT)
def test_padding_never_reaches_a_real_output(name, causal, dtype, masked):
  """Masked: real positions equal each row run alone, unpadded. Unmasked: an all-True
  mask is the same as no mask."""
  out = _outputs(name, causal, dtype)['masked' if masked else 'unmasked']
  if not masked:
    assert_close(out['all_real'], out['parallel'], dtype)
    return
  n = int(LENGTHS[1])
  assert_close(out['parallel'][1, :n], _outputs(name, causal, dtype)['alone'], dtype)
  assert np.all(np.isfinite(out['parallel']))


@pytest.mark.parametrize('masked', MASKED)
@pytest.mark.parametrize('name, causal, dtype', CASES_F32)
def test_dependence_by_gradient(name, causal, dtype, masked):
  """``dep[b, t, s]``: the largest |d y[b, t] / d x[b, s]|. Zero for every later input of
  a causal mixer and for every padded input of a real output; nonzero elsewhere on the
  allowed pattern. (Rows never mix: ``dep`` takes the same row on both sides.)"""
  jac = _outputs(name, causal, dtype)['masked' if masked else 'unmasked']['jacobian']
  dep = np.abs(jac[np.arange(B), :, :, np.arange(B)]).max(axis=(2, 4))   # [B, T, T]
  cross = np.abs(jac[0, :, :, 1]).max() + np.abs(jac[1, :, :, 0]).max()
  assert cross == 0, 'outputs of one row depend on another row'
  real = _real(masked)
  s_real = real[:, None, :]                                                 # the input
  later = np.arange(T)[None, :, None] < np.arange(T)[None, None, :]
  forbidden = ~s_real | later if causal else ~s_real
  outputs = real[:, :, None]                                                # real rows
  # A zero is a zero: no tolerance, except for rounding in an FFT (S4D's convolution
  # spreads ~1e-7 relative error over every position).
  tol = 1e-5 * dep[outputs & ~forbidden].max()
  assert np.all(dep[outputs & forbidden] <= tol), 'output depends on a forbidden input'
  assert np.all(dep[outputs & ~forbidden] > tol), 'an allowed dependence is missing'
  assert _mixer(name, causal, dtype).is_causal == causal


def _equations(jaxpr) -> int:
  """Equations in a jaxpr, counting those inside every sub-jaxpr (scan, while and cond
  bodies, pjit, custom_vjp) so that no loop body hides a Python loop over time."""
  count = 0
  for eqn in jaxpr.eqns:
    count += 1
    todo = list(eqn.params.values())
    while todo:
      v = todo.pop()
      if isinstance(v, (list, tuple)):
        todo.extend(v)
      elif hasattr(v, 'eqns'):
        count += _equations(v)
      elif hasattr(getattr(v, 'jaxpr', None), 'eqns'):
        count += _equations(v.jaxpr)
  return count


# float32 only: whether time is a Python loop is a property of the mixer's code, not of
# its dtype (bfloat16 only inserts casts, a fixed number per op). Masked and unmasked
# both run, since the mask path is different code.
@pytest.mark.parametrize('masked', MASKED)
@pytest.mark.parametrize('name, causal', CASES)
def test_compiled_program_does_not_grow_with_length(name, causal, masked):
  """The gradient program at 128 tokens has within 10 % of the equations (nested ones
  included) it has at 16: a Python loop over time would make it ~8x. Counted on the jaxpr
  rather than the lowered text: lowering adds no loop of its own (no mixer passes
  ``unroll`` to a scan), and tracing costs a fraction of lowering."""
  mixer, params, _, _, _ = _setup(name, causal, 'float32')

  def size(time):
    x = jnp.zeros((B, time, D))
    m = jnp.ones((B, time), bool) if masked else None
    loss = lambda p, x: jnp.sum(mixer.apply(p, x, m).astype(jnp.float32))
    return _equations(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x).jaxpr)

  small, large = size(16), size(128)
  assert large <= 1.1 * small, (small, large)


@pytest.mark.parametrize('name, causal, dtype', CASES_DT)
def test_streaming_state(name, causal, dtype):
  mixer, params, x, _, _ = _setup(name, causal, dtype)
  if not causal:
    with pytest.raises(NotImplementedError, match='not causal'):
      mixer.apply(params, B, method='init_state')
    with pytest.raises(NotImplementedError, match='not causal'):
      mixer.apply(params, None, x[:, 0], method='step')
    return
  state = mixer.apply(params, B, method='init_state')
  one = mixer.apply(params, 1, method='init_state')
  # Shapes and dtypes only (values are test_streaming_equals_parallel's): no compile.
  new, y_t = jax.eval_shape(lambda s, x_t: mixer.apply(params, s, x_t, method='step'),
                            state, x[:, 0])
  assert y_t.shape == (B, D)
  leaves = jax.tree.leaves(state)
  assert leaves
  assert jax.tree.structure(new) == jax.tree.structure(state)
  for leaf, leaf_one, leaf_new in zip(leaves, jax.tree.leaves(one), jax.tree.leaves(new)):
    assert leaf_new.shape == leaf.shape and leaf_new.dtype == leaf.dtype
    if leaf.ndim:  # batch-leading arrays (a scalar position counter is shared)
      assert leaf.shape[0] == B and leaf_one.shape == (1,) + leaf.shape[1:]
