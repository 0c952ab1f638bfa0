"""The RG-LRU and the recurrent block of Hawk (De et al. 2024, "Griffin: Mixing Gated
Linear Recurrences with Local Attention for Efficient Language Models", arXiv:2402.19427).

Recurrent block (sec. 2.4, Fig. 2(c)), ``x`` ``[batch, time, d_model]``, ``E`` the RNN width::

    y = GeLU(linear_y(x))                                  [batch, time, E]
    u = RG-LRU(Conv1D(linear_x(x)))                        [batch, time, E]
    out = linear_out(u * y)                                [batch, time, d_model]

RG-LRU (sec. 2.4, eqs. 1-4), per channel, with ``c = 8``::

    r_t = sigmoid(W_a u_t + b_a)                 recurrence gate
    i_t = sigmoid(W_x u_t + b_x)                 input gate
    log a_t = -c * r_t * softplus(Lambda)        a_t = sigma(-Lambda)^(c r_t), in (0, 1)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)

``W_a`` and ``W_x`` are block-diagonal with ``num_heads`` blocks and the ``sqrt`` has its
derivative bounded by 1000 near ``a = 1``, both as in the authors' release
(google-deepmind/recurrentgemma); so is the first token of a sequence, which enters
unscaled (``h_0 = i_0 * u_0``: the release resets the recurrence there). ``Lambda`` is
initialised so that ``sigma(-Lambda)^2`` is uniform in ``[0.9^2, 0.999^2]`` (the release's
ring initialisation). The recurrence is
``seqjax.ops.scan.linear_scan`` (switch site ``scan``); padding sets ``a = 1, b = 0``.

Params (the release's names): ``linear_y``, ``linear_x`` (``[d_model, E]`` + bias),
``conv_1d/w`` ``[4, E]``, ``conv_1d/b`` ``[E]``, ``rg_lru/input_gate/w``,
``rg_lru/a_gate/w`` ``[heads, E/heads, E/heads]`` with ``b`` ``[heads, E/heads]``,
``rg_lru/a_param`` ``[E]``, ``linear_out`` ``[E, d_model]`` + bias: the layout of
recurrentgemma's ``RecurrentBlock`` (JAX, and PyTorch with its ``[out, in]`` Linear weights
transposed: :func:`hawk_params_from_torch`).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.layers.block import over_tokens
from seqjax.layers.causal_conv import CausalConv1D
from seqjax.layers.headwise import BlockDiagonalDense
from seqjax.layers.torch_weights import named_weights
from seqjax.ops.scan import SCAN, linear_scan
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

C = 8.0


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sqrt_bounded_grad(x: Array, max_grad: float) -> Array:
  """``sqrt(x)`` whose derivative is at most ``max_grad`` (``1 - a^2`` reaches 0 as a
  channel's decay nears 1, where the true derivative is unbounded)."""
  del max_grad
  return jnp.sqrt(x)


def _sqrt_fwd(x, max_grad):
  return jnp.sqrt(x), x


def _sqrt_bwd(max_grad, x, g):
  return (g * 0.5 / jnp.sqrt(jnp.maximum(x, 0.25 / max_grad ** 2)),)


sqrt_bounded_grad.defvjp(_sqrt_fwd, _sqrt_bwd)


def _ring_init(min_rad: float = 0.9, max_rad: float = 0.999):
  """``Lambda`` with ``sigma(-Lambda)^2`` uniform in ``[min_rad^2, max_rad^2]``."""

  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, jnp.float32, min_rad ** 2, max_rad ** 2)
    log_rad = 0.5 * jnp.log(u)                    # log sigma(-Lambda) = -softplus(Lambda)
    return jnp.log(jnp.expm1(-log_rad)).astype(dtype)   # softplus^-1(-log_rad)

  return init


class RGLRU(nn.Module):
  """The RG-LRU recurrence (module doc), ``[batch, time, E] -> [batch, time, E]``."""

  width: int
  num_heads: int
  impl: str = AUTO
  dtype: Any = jnp.float32

  def setup(self):
    self.input_gate = BlockDiagonalDense(self.num_heads, dtype=self.dtype, name='input_gate')
    self.a_gate = BlockDiagonalDense(self.num_heads, dtype=self.dtype, name='a_gate')
    self.a_param = self.param('a_param', _ring_init(), (self.width,))

  def coefficients(self, u: Array, first: Array) -> tuple[Array, Array]:
    """``(a_t, b_t)`` of ``h_t = a_t h_{t-1} + b_t`` in float32+; ``first`` is True
    (broadcast against ``u[..., 0]``) where a sequence starts."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    gate_x = jax.nn.sigmoid(self.input_gate(u).astype(real))
    gate_a = jax.nn.sigmoid(self.a_gate(u).astype(real))
    log_a = -C * gate_a * jax.nn.softplus(self.a_param.astype(real))
    # -expm1 rather than 1 - exp: a gate near 0 puts a_t^2 within float32 round-off of 1.
    scale = sqrt_bounded_grad(-jnp.expm1(2.0 * log_a), 1000.0)
    first = first[..., None]
    return (jnp.where(first, 0.0, jnp.exp(log_a)),
            jnp.where(first, 1.0, scale) * gate_x * u.astype(real))

  def __call__(self, u: Array, mask: Array | None) -> Array:
    bsz, t, _ = u.shape
    # Gates on [batch * time, E] views: their parameters' gradient sums at batch 1.
    first = jnp.broadcast_to(jnp.arange(t) == 0, (bsz, t))
    a, b = over_tokens(self.coefficients, u, first)
    if mask is not None:
      a = jnp.where(mask[..., None], a, 1.0)
      b = jnp.where(mask[..., None], b, 0.0)
    return linear_scan(a, b, backend=SCAN.choice(self.impl))

  def step(self, h: Array, u_t: Array, first: Array) -> Array:
    a, b = self.coefficients(u_t, first)
    return a * h + b


class Hawk(nn.Module):
  """Hawk's recurrent block as a mixer, ``[batch, time, d_model] -> same`` (module doc).

  Attributes:
    d_model: model width.
    num_heads: blocks of the gates' block-diagonal weights (divides the RNN width).
    rglru_width: RNN width ``E``; 0 means ``d_model`` (the release's default; the paper's
      models use about ``4/3 d_model``).
    conv_width: temporal width of the Conv1D (4 in the paper).
    impl: implementation switch, site ``scan`` (the linear-scan backend).
    dtype: computation dtype of the projections; the recurrence runs in float32+.
  """

  d_model: int
  num_heads: int = 4
  rglru_width: int = 0
  conv_width: int = 4
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = (SCAN,)

  @property
  def width(self) -> int:
    return self.rglru_width or self.d_model

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.rglru_width < 0:
      raise ValueError(f'rglru_width={self.rglru_width} must be >= 0 (0 = d_model)')
    if self.num_heads <= 0 or self.width % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} must be positive and divide the '
                       f'RG-LRU width {self.width} (rglru_width, or d_model when 0)')
    SCAN.choice(self.impl)

  def setup(self):
    self.check()
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name)
    self.linear_y = dense(self.width, 'linear_y')
    self.linear_x = dense(self.width, 'linear_x')
    self.conv_1d = CausalConv1D(self.width, self.conv_width, dtype=self.dtype,
                                name='conv_1d')
    self.rg_lru = RGLRU(self.width, self.num_heads, self.impl, self.dtype, name='rg_lru')
    self.linear_out = dense(self.d_model, 'linear_out')

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    del deterministic
    x = x.astype(self.dtype)
    y = nn.gelu(self.linear_y(x), approximate=True)
    h = self.rg_lru(self.conv_1d(self.linear_x(x)), mask)
    return self.linear_out(h.astype(self.dtype) * y)

  def init_state(self, batch_size: int) -> State:
    """``conv`` ``[batch, conv_width - 1, E]``, ``h`` ``[batch, E]`` (float32+) and the
    shared flag ``started`` (0 before the first token, which enters unscaled; then 1)."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    return {'conv': self.conv_1d.init_state(batch_size),
            'h': jnp.zeros((batch_size, self.width), real),
            'started': jnp.zeros((), jnp.int32)}

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    x_t = x_t.astype(self.dtype)
    y = nn.gelu(self.linear_y(x_t), approximate=True)
    conv, u = self.conv_1d.step(state['conv'], self.linear_x(x_t))
    h = self.rg_lru.step(state['h'], u, state['started'] == 0)
    out = self.linear_out(h.astype(self.dtype) * y)
    return {'conv': conv, 'h': h, 'started': jnp.ones((), jnp.int32)}, out


def hawk_params_from_torch(weights: Mapping[str, Any]) -> dict:
  """recurrentgemma's PyTorch ``RecurrentBlock`` state dict -> :class:`Hawk` params.

  The layouts map one to one (same names): ``linear_y``, ``linear_x``, ``linear_out``
  (``nn.Linear``: ``weight`` ``[out, in]``, transposed here to ``kernel`` ``[in, out]``,
  and ``bias``), ``conv_1d.w`` ``[4, E]``, ``conv_1d.b``, ``rg_lru.a_param`` ``[E]``,
  ``rg_lru.{input_gate,a_gate}.{w,b}`` ``[heads, E/heads, E/heads]``, ``[heads, E/heads]``.
  Keys may carry a common prefix (e.g. ``blocks.0.temporal_block.``). Any key outside this
  list, a missing key or a shape that does not fit raises ``ValueError`` naming it.

  Returns the value of the module's ``'params'`` collection (float32 NumPy arrays); build
  the module with ``d_model``, ``rglru_width`` and ``num_heads`` read off the shapes.
  """
  names = ('linear_y.weight', 'linear_y.bias', 'linear_x.weight', 'linear_x.bias',
           'linear_out.weight', 'linear_out.bias', 'conv_1d.w', 'conv_1d.b',
           'rg_lru.a_param', 'rg_lru.input_gate.w', 'rg_lru.input_gate.b',
           'rg_lru.a_gate.w', 'rg_lru.a_gate.b')
  prefix, w = named_weights(weights, names, module='RecurrentBlock', target='Hawk')
  e, d = w['linear_x.weight'].shape
  heads = w['rg_lru.a_gate.w'].shape[0]
  shapes = {'linear_y.weight': (e, d), 'linear_y.bias': (e,), 'linear_x.bias': (e,),
            'linear_out.weight': (d, e), 'linear_out.bias': (d,), 'conv_1d.b': (e,),
            'rg_lru.a_param': (e,), 'rg_lru.input_gate.w': (heads, e // heads, e // heads),
            'rg_lru.a_gate.w': (heads, e // heads, e // heads),
            'rg_lru.input_gate.b': (heads, e // heads), 'rg_lru.a_gate.b': (heads, e // heads)}
  for name, shape in shapes.items():
    if w[name].shape != shape:
      raise ValueError(f'torch weight {prefix + name!r} has shape {w[name].shape}, '
                       f'expected {shape}')
  if w['conv_1d.w'].ndim != 2 or w['conv_1d.w'].shape[1] != e:
    raise ValueError(f"torch weight {prefix + 'conv_1d.w'!r} has shape "
                     f"{w['conv_1d.w'].shape}, expected [temporal_width, {e}]")
  dense = lambda n: {'kernel': w[f'{n}.weight'].T.copy(), 'bias': w[f'{n}.bias']}
  gate = lambda n: {'w': w[f'rg_lru.{n}.w'], 'b': w[f'rg_lru.{n}.b']}
  return {'linear_y': dense('linear_y'), 'linear_x': dense('linear_x'),
          'linear_out': dense('linear_out'),
          'conv_1d': {'w': w['conv_1d.w'], 'b': w['conv_1d.b']},
          'rg_lru': {'a_param': w['rg_lru.a_param'], 'input_gate': gate('input_gate'),
                     'a_gate': gate('a_gate')}}
