"""Pooling a sequence of hidden states into one vector per sequence (classifier heads)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.layers.base import lengths_from_mask

Array = jax.Array

# ``final_states`` is each direction's final state: the article's ``cat(h_n[-2], h_n[-1])``.
POOLINGS = ('mean', 'last', 'first', 'final_states')


def pool(hidden: Array, mask: Array, kind: str, bidirectional: bool = False) -> Array:
  """Pools ``hidden`` ``[batch, time, width]`` over real tokens to ``[batch, width]``.

  ``mean``: average over real tokens. ``last``: the last real token. ``first``: token 0.
  ``final_states``: each direction's final state — the forward half at the last real
  token and, for a bidirectional layer, the backward half at token 0 (where the backward
  pass ends).
  """
  batch, time, width = hidden.shape
  last_index = jnp.maximum(lengths_from_mask(mask, batch, time) - 1, 0)
  at_last = jnp.take_along_axis(hidden, last_index[:, None, None], axis=1)[:, 0]
  if kind == 'mean':
    weights = mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  if kind == 'last' or (kind == 'final_states' and not bidirectional):
    return at_last
  if kind == 'first':
    return hidden[:, 0]
  if kind == 'final_states':
    half = width // 2
    return jnp.concatenate([at_last[:, :half], hidden[:, 0, half:]], axis=-1)
  raise ValueError(f'unknown pooling {kind!r}; choose one of {list(POOLINGS)}')
