"""Pre-norm residual block: the unit of the fair-comparison backbone.

``y = x + Dropout(mixer(Norm(x)))`` then ``y + Dropout(MLP(Norm(y)))`` (the pre-LayerNorm
arrangement of Xiong et al. 2020, used by GPT-2 and most modern models). Families differ
only in the ``mixer``; the norms, MLP and residuals are identical, so a comparison measures
the mixer and nothing else. A Transformer block is this block with multi-head attention as
the mixer (``seqjax.layers.transformer``).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State

Array = jax.Array


def per_token(fn: Callable[[Array], Array], x: Array) -> Array:
  """``fn`` applied to ``x [..., features]`` viewed as ``[tokens, features]``.

  For position-wise layers (norms, the MLP, projections) the result is the same as
  ``fn(x)``; the point is the gradient. A parameter broadcast over ``[batch, time]`` gets
  its gradient from a sum over both axes, and with batch 1 XLA drops the unit axis and
  sums over the middle axis of ``[1, T, F]``. XLA:CPU (jaxlib 0.10) hands that reduction
  to a YNNPACK kernel that is slow for it: ``sum(a * b, axis=1)`` on ``[1, 2048, 512]``
  took 9.6 ms against 0.35 ms for the same sum over axis 0 of ``[2048, 512]``, and
  48 ms at 8,192 tokens (BENCHMARKS.md, "Mamba after issue 16, round 3"). Over
  ``[tokens, features]`` the sum is over the leading axis whatever the batch size.
  """
  out = fn(x.reshape(-1, x.shape[-1]))
  return out.reshape(x.shape[:-1] + out.shape[-1:])


def over_tokens(fn: Callable[..., Any], *xs: Array) -> Any:
  """:func:`per_token` for position-wise functions of several ``[batch, time, ...]``
  arrays with any trailing axes (e.g. ``[batch, time, heads, d]``): ``fn`` sees each as
  ``[batch * time, ...]``, and every array it returns (a pytree) gets ``[batch, time]``
  back."""
  bsz, t = xs[0].shape[:2]
  out = fn(*(x.reshape((bsz * t,) + x.shape[2:]) for x in xs))
  return jax.tree.map(lambda v: v.reshape((bsz, t) + v.shape[1:]), out)


class MLP(nn.Module):
  """Position-wise feed-forward network ``W_2 act(W_1 x + b_1) + b_2``.

  ``x``: ``[..., d_model]`` -> ``[..., d_model]``; ``hidden`` is the inner width
  (4 * d_model in Vaswani et al. 2017).
  """

  d_model: int
  hidden: int
  activation: str = 'gelu'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.up = nn.Dense(self.hidden, dtype=self.dtype, name='up')
    self.down = nn.Dense(self.d_model, dtype=self.dtype, name='down')
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    act = {'gelu': nn.gelu, 'relu': nn.relu, 'silu': nn.silu}[self.activation]
    return self.down(self.drop(act(self.up(x)), deterministic=deterministic))


_NORM_CLASSES = {'layernorm': nn.LayerNorm, 'rmsnorm': nn.RMSNorm}
NORMS = tuple(_NORM_CLASSES)


def make_norm(kind: str, dtype: Any, name: str | None = None) -> nn.Module:
  """LayerNorm (Ba et al. 2016) or RMSNorm (Zhang & Sennrich 2019) over the last axis."""
  if kind not in _NORM_CLASSES:
    raise ValueError(f'unknown norm {kind!r}; choose one of {list(NORMS)}')
  return _NORM_CLASSES[kind](dtype=dtype, name=name)


class ResidualBlock(nn.Module):
  """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``, with the mixer's streaming mode.

  Attributes:
    mixer: any seqjax mixer mapping ``d_model`` to ``d_model`` (unbound module; it becomes
      this block's child ``mixer``).
    d_model: residual width.
    mlp_hidden: inner width of the MLP; ``0`` drops the MLP sub-block (Mamba-style blocks).
    dropout: dropout on both residual branches (Vaswani et al. 2017, sec. 5.4).
  """

  mixer: nn.Module
  d_model: int
  mlp_hidden: int = 0
  dropout: float = 0.0
  norm: str = 'layernorm'
  dtype: Any = jnp.float32

  def setup(self):
    self.mixer_norm = make_norm(self.norm, self.dtype, 'mixer_norm')
    self.drop = nn.Dropout(self.dropout)
    if self.mlp_hidden:
      self.mlp_norm = make_norm(self.norm, self.dtype, 'mlp_norm')
      self.mlp = MLP(self.d_model, self.mlp_hidden, dropout=self.dropout,
                     dtype=self.dtype)

  @property
  def is_causal(self) -> bool:
    return self.mixer.is_causal

  def _mlp_branch(self, x: Array, deterministic: bool) -> Array:
    if not self.mlp_hidden:
      return x
    h = per_token(lambda v: self.mlp(self.mlp_norm(v), deterministic=deterministic), x)
    return x + self.drop(h, deterministic=deterministic)

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``x``: ``[batch, time, d_model]``, ``mask``: ``[batch, time]`` -> same shape."""
    h = self.mixer(per_token(self.mixer_norm, x), mask, deterministic=deterministic)
    x = x + self.drop(h, deterministic=deterministic)
    return self._mlp_branch(x, deterministic)

  def init_state(self, batch_size: int) -> State:
    return self.mixer.init_state(batch_size)

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token, ``x_t`` ``[batch, d_model]``; dropout is off when streaming."""
    state, h = self.mixer.step(state, self.mixer_norm(x_t))
    return state, self._mlp_branch(x_t + h, deterministic=True)
