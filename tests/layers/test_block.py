"""``per_token``: a position-wise layer on the ``[tokens, features]`` view gives the same
values and parameter gradients as on ``[batch, time, features]`` (it exists only to change
which reduction XLA emits for the gradient at batch 1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.block import MLP, per_token


def test_per_token_matches_the_layer_on_batch_time_features():
  layer = nn.Sequential([nn.LayerNorm(), MLP(8, 32)])
  params = layer.init(jax.random.PRNGKey(2), jnp.zeros((1, 5, 8)))

  @jax.jit
  def outputs_and_grads(p, x, w):
    def loss(p, flat):
      apply = lambda v: layer.apply(p, v)
      y = per_token(apply, x) if flat else apply(x)
      return jnp.sum(y * w), y
    return [jax.grad(loss, has_aux=True)(p, flat) for flat in (False, True)]

  for batch in (1, 3):  # batch 1 is the case per_token exists for
    x = jax.random.normal(jax.random.PRNGKey(batch), (batch, 5, 8))
    w = jax.random.normal(jax.random.PRNGKey(10 + batch), (batch, 5, 8))
    (g_ref, y_ref), (g_flat, y_flat) = outputs_and_grads(params, x, w)
    np.testing.assert_allclose(y_flat, y_ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in (g_ref, g_flat))):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  assert per_token(lambda v: v[..., :3], x).shape == (3, 5, 3)
