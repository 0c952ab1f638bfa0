"""Any causal mixer read in both directions: the non-causal form of S4D and Mamba.

A classifier sees the whole input, so it should read it both ways, as the article's
bidirectional LSTM does. For a causal mixer ``f`` this module runs two independent copies,
one over the sequence and one over the sequence reversed, and adds their outputs::

    y = f_fwd(x) + R(f_bwd(R(x)))                       # [batch, time, d_model]

where ``R`` reverses each sequence *within its length* (right padding stays in place), so
the backward copy starts at each sequence's last real token and padding never reaches a
real position (the idea of Flax's ``flip_sequences``). Summing the two directions is the
bidirectional S4 of Gu et al. 2022 (sec. 4: one kernel per direction, the two convolutions
added) and the bidirectional Mamba of Vision Mamba (Zhu et al. 2024, eq. 5 and Alg. 1,
separate parameters per direction). Parameters double; the comparison's width matching
(``seqjax.models.sizing``) pays for them with a narrower model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State, lengths_from_mask, not_streamable

Array = jax.Array


def reverse_within_lengths(x: Array, mask: Array | None) -> Array:
  """``x`` ``[batch, time, ...]`` with each row's first ``length`` steps reversed and its
  padding left where it is (``mask`` ``[batch, time]``, a prefix of ``True``; ``None``:
  every step is real). Its own inverse."""
  batch, time = x.shape[:2]
  lengths = lengths_from_mask(mask, batch, time)[:, None]
  steps = jnp.arange(time)[None]
  index = jnp.where(steps < lengths, lengths - 1 - steps, steps)
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


class Bidirectional(nn.Module):
  """``fwd`` over the sequence plus ``bwd`` over it reversed (see the module docstring).

  Attributes:
    fwd, bwd: two unbound instances of the same causal mixer (independent parameters),
      ``[batch, time, d] -> [batch, time, d]``.
  """

  fwd: nn.Module
  bwd: nn.Module

  is_causal = False
  switches: ClassVar[tuple[Any, ...]] = ()

  @property
  def impl(self) -> str:
    return self.fwd.impl

  def check(self) -> None:
    if not (self.fwd.is_causal and self.bwd.is_causal):
      raise ValueError('Bidirectional wraps causal mixers; the ones given already look '
                       'ahead')
    self.fwd.check()

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``x`` ``[batch, time, d]``, ``mask`` ``[batch, time]`` -> ``[batch, time, d]``."""
    forward = self.fwd(x, mask, deterministic=deterministic)
    backward = self.bwd(reverse_within_lengths(x, mask), mask, deterministic=deterministic)
    return forward + reverse_within_lengths(backward, mask)

  def init_state(self, batch_size: int) -> State:
    raise not_streamable(f'Bidirectional({type(self.fwd).__name__})')

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    raise not_streamable(f'Bidirectional({type(self.fwd).__name__})')
