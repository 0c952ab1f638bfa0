"""Invariants of the shared recurrent driver (LSTM, GRU) beyond the mixer contract:
prefill + continue, final states under padding, holes in the mask, the implementation
choices, dropout between layers, bfloat16 with a float32 state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.gru import GRU
from seqjax.layers.lstm import LSTM

IN, H = 4, 6
FAMILIES = [LSTM, GRU]


def make(cls, **kw):
  """Model and random variables in its init layout (NumPy-filled: no compile needed)."""
  model = cls(IN, H, **kw)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, IN)))
  rng = np.random.default_rng(0)
  bound = 1 / np.sqrt(H)
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.uniform(-bound, bound, s.shape), s.dtype), shapes)
  return model, variables


def data(seed, batch, time):
  return np.random.default_rng(seed).normal(size=(batch, time, IN)).astype(np.float32)


def assert_trees_close(a, b, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol), a, b)


@pytest.mark.parametrize('cls', FAMILIES)
def test_streaming_equals_parallel_and_continues_a_prefill(cls):
  model, variables = make(cls, num_layers=2)
  x = data(0, 2, 12)
  parallel = jax.jit(functools.partial(model.apply, return_final_state=True))

  @jax.jit
  def stream(state, xs):
    step = lambda s, x_t: model.apply(variables, s, x_t, method=model.step)
    state, ys = jax.lax.scan(step, state, jnp.swapaxes(xs, 0, 1))
    return state, jnp.swapaxes(ys, 0, 1)

  y, final = parallel(variables, x)
  state, ys = stream(model.init_state(2), x)
  np.testing.assert_allclose(ys, y, atol=1e-5)
  assert_trees_close(state, final)

  # Prefill 5 tokens in parallel, stream the remaining 7 from the returned state.
  _, prefill_state = parallel(variables, x[:, :5])
  assert jax.tree.structure(prefill_state) == jax.tree.structure(model.init_state(2))
  state, ys = stream(prefill_state, x[:, 5:])
  np.testing.assert_allclose(ys, y[:, 5:], atol=1e-5)
  assert_trees_close(state, final)


def test_padded_prefill_continues_each_sequence_from_its_last_real_token():
  model, variables = make(LSTM, num_layers=2)
  prompt, cont, lengths = data(1, 2, 4), data(2, 2, 3), [4, 2]
  mask = np.arange(4)[None, :] < np.asarray(lengths)[:, None]
  _, state = jax.jit(functools.partial(model.apply, return_final_state=True))(
      variables, prompt, mask)
  step = jax.jit(functools.partial(model.apply, variables, method=model.step))
  streamed = []
  for t in range(3):  # a handful of generation steps, not a loop inside a model
    state, y_t = step(state, cont[:, t])
    streamed.append(y_t)
  # Reference: each real prompt followed directly by its continuation, in one call.
  full = np.zeros((2, 7, IN), np.float32)
  for b, n in enumerate(lengths):
    full[b, :n + 3] = np.concatenate([prompt[b, :n], cont[b]])
  full_mask = np.arange(7)[None, :] < np.asarray(lengths)[:, None] + 3
  y = jax.jit(model.apply)(variables, full, full_mask)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(np.stack(streamed, 1)[b], y[b, n:n + 3], atol=1e-5)


@pytest.mark.parametrize('cls,bidirectional', [(LSTM, True), (GRU, False)])
def test_padding_never_advances_the_state(cls, bidirectional):
  model, variables = make(cls, num_layers=2, bidirectional=bidirectional)
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  x = data(3, 3, 6)
  mask = np.arange(6)[None, :] < np.array([[6], [3], [1]])
  y, state = apply(variables, x, mask)
  # Appending padding (with garbage values) changes neither real outputs nor final state.
  x_long = np.concatenate([x, 100 * data(4, 3, 5)], axis=1)
  mask_long = np.concatenate([mask, np.zeros((3, 5), bool)], axis=1)
  y_long, state_long = apply(variables, x_long, mask_long)
  np.testing.assert_allclose(y_long[:, :6], y, atol=1e-6)
  np.testing.assert_array_equal(y_long[:, 6:], 0.0)
  assert_trees_close(state_long, state, atol=1e-6)


def test_any_mask_equals_the_sequence_with_masked_tokens_removed():
  # Bidirectional, so both the forward and the reverse scan skip the holes.
  model, variables = make(LSTM, bidirectional=True)
  apply = jax.jit(functools.partial(model.apply, return_final_state=True))
  x = data(5, 1, 8)
  keep = np.array([[True, False, True, True, False, False, True, False]])
  y, state = apply(variables, x, keep)
  y_ref, state_ref = apply(variables, x[:, keep[0]], None)
  np.testing.assert_allclose(y[:, keep[0]], y_ref, atol=1e-5)
  assert_trees_close(state, state_ref)


def test_hoisted_input_projection_equals_per_step_in_values_and_gradients():
  # GRU hoisting is compared with the NumPy reference in test_gru.py; the fused path is
  # compared with autodiff in test_recurrent_fast.py.
  per_step, variables = make(LSTM, bidirectional=True, impl='rnn:autodiff')
  hoisted = LSTM(IN, H, bidirectional=True, impl='rnn:hoisted')
  x = data(6, 2, 7)
  mask = np.arange(7)[None, :] < np.array([[7], [4]])
  weights = np.random.default_rng(7).normal(size=(2, 7, per_step.output_size))

  def loss_and_grads(model):
    loss = lambda v, x: jnp.sum(model.apply(v, x, mask) * weights)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables, x)

  (l1, g1), (l2, g2) = loss_and_grads(per_step), loss_and_grads(hoisted)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  assert_trees_close(g1, g2)


def test_dropout_only_between_layers():
  x = data(8, 2, 5)
  two, v2 = make(LSTM, num_layers=2, dropout=0.5)
  one, v1 = make(LSTM, num_layers=1, dropout=0.5)
  plain = LSTM(IN, H, num_layers=2)

  @jax.jit
  def run(key):  # one compile for every variant
    rngs = {'dropout': key}
    return (two.apply(v2, x, deterministic=True, rngs=rngs), plain.apply(v2, x),
            two.apply(v2, x, deterministic=False, rngs=rngs),
            one.apply(v1, x, deterministic=True, rngs=rngs),
            one.apply(v1, x, deterministic=False, rngs=rngs))

  two_det, two_plain, two_train, one_det, one_train = run(jax.random.key(3))
  np.testing.assert_allclose(two_det, two_plain, atol=1e-6)  # deterministic: no dropout
  assert np.abs(np.asarray(two_train) - np.asarray(two_det)).max() > 1e-3
  np.testing.assert_allclose(one_train, one_det, atol=1e-6)  # nothing between layers


def test_initial_state_continues_a_parallel_prefill_in_parallel():
  model, variables = make(GRU, num_layers=2)
  x = data(9, 2, 8)
  run = jax.jit(functools.partial(model.apply, return_final_state=True))
  y, final = run(variables, x)
  _, state = run(variables, x[:, :3])
  as_lists = [{'fwd': layer['fwd']} for layer in state]  # e.g. restored from a checkpoint
  y_rest, final_rest = run(variables, x[:, 3:], initial_state=as_lists)
  np.testing.assert_allclose(y_rest, y[:, 3:], atol=1e-5)
  assert_trees_close(final_rest, final)
  with pytest.raises(ValueError, match='initial_state'):
    jax.eval_shape(functools.partial(model.apply, initial_state=state[:1]), variables, x)


def test_bfloat16_compute_tracks_float32_and_keeps_a_float32_state():
  model, variables = make(LSTM, num_layers=2)
  x = data(10, 2, 6)
  low = LSTM(IN, H, num_layers=2, dtype=jnp.bfloat16)
  y_low, state_low = jax.jit(functools.partial(low.apply, return_final_state=True))(
      variables, x)
  assert y_low.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state_low))
  np.testing.assert_allclose(np.asarray(y_low, np.float32),
                             jax.jit(model.apply)(variables, x), atol=3e-2)
