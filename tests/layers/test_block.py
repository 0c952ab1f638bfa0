"""``per_token``: a position-wise layer on the ``[tokens, features]`` view gives the same
values and parameter gradients as on ``[batch, time, features]`` (it exists only to change
which reduction XLA emits for the gradient at batch 1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.block import MLP, per_token


@pytest.mark.parametrize('batch', [1, 3])
def test_per_token_matches_the_layer_on_batch_time_features(batch):
  layer = nn.Sequential([nn.LayerNorm(), MLP(8, 32)])
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, 5, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (batch, 5, 8))
  params = layer.init(jax.random.PRNGKey(2), x)

  def loss(p, flat):
    apply = lambda v: layer.apply(p, v)
    return jnp.sum((per_token(apply, x) if flat else apply(x)) * w)

  np.testing.assert_allclose(per_token(lambda v: layer.apply(params, v), x),
                             layer.apply(params, x), rtol=1e-6, atol=1e-6)
  grads = [jax.grad(loss)(params, flat) for flat in (False, True)]
  for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert per_token(lambda v: v[..., :3], x).shape == (batch, 5, 3)
