"""The bidirectional wrapper against running each sequence alone, both ways, by hand.

The mixer contract test covers padding invariance, non-causality and the refusal to
stream for every family's bidirectional form; this file checks the arithmetic: each real
position gets the forward copy's output plus the backward copy's output on the reversed
unpadded sequence, and the within-length reversal is its own inverse.
"""

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.bidirectional import Bidirectional, reverse_within_lengths
from seqjax.layers.s4d import S4D


def test_reverse_within_lengths_reverses_only_the_real_prefix():
  x = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5)[..., None]
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  got = np.asarray(reverse_within_lengths(x, mask))[..., 0]
  np.testing.assert_array_equal(got, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
  np.testing.assert_array_equal(reverse_within_lengths(jnp.asarray(got)[..., None], mask),
                                x)


def test_bidirectional_equals_forward_plus_reversed_backward_per_sequence():
  d, lengths = 4, np.array([6, 3])
  layer = Bidirectional(S4D(d, s4d_state_size=4), S4D(d, s4d_state_size=4))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, d)).astype(np.float32)
  x[1, 3:] = 50.0  # padding garbage
  mask = jnp.asarray(np.arange(6)[None] < lengths[:, None])
  # Compiled programs throughout: applied eagerly, every operation compiles on its own.
  params = jax.jit(layer.init)(jax.random.key(0), jnp.asarray(x), mask)
  # Independent copies: the two directions must not share parameters.
  fwd_p, bwd_p = params['params']['fwd'], params['params']['bwd']
  assert not np.allclose(fwd_p['C'], bwd_p['C'])
  out = np.asarray(jax.jit(layer.apply)(params, jnp.asarray(x), mask))
  single = jax.jit(S4D(d, s4d_state_size=4).apply)
  for b, n in enumerate(lengths):
    seq = jnp.asarray(x[b:b + 1, :n])
    want = (np.asarray(single({'params': fwd_p}, seq))
            + np.asarray(single({'params': bwd_p}, seq[:, ::-1]))[:, ::-1])
    np.testing.assert_allclose(out[b, :n], want[0], atol=1e-5)
